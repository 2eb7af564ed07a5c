"""declare's providers, one module each, registered in the `declare.providers` entry points."""
