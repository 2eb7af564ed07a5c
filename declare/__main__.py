"""`python -m declare`: the same CLI as the `declare` command (useful in bash and zsh, where
`declare` is a shell builtin that shadows the command on PATH)."""

from declare.cli import main

main()
