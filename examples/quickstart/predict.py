"""Send one real prediction to the quickstart endpoint through declare's gateway.

The gateway's host and port are read from this folder's declare.yaml, by declare's own loader.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx

from declare.config import load_config

CONFIG = load_config(Path(__file__).resolve().parent, os.environ)
URL = f"http://{CONFIG.gateway_host}:{CONFIG.gateway_port}/serving-endpoints/iris/invocations"
BODY = {
    "dataframe_split": {
        "columns": [
            "sepal length (cm)",
            "sepal width (cm)",
            "petal length (cm)",
            "petal width (cm)",
        ],
        "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
    }
}

response = httpx.post(URL, json=BODY, timeout=30)
print(
    f"POST {URL} -> {response.status_code}, served-model-name: "
    f"{response.headers.get('served-model-name')}"
)
print(json.dumps(response.json()))
sys.exit(0 if response.status_code == 200 else 1)
