"""Send one real prediction to the quickstart endpoint through declare's gateway."""

from __future__ import annotations

import json
import sys

import httpx

URL = "http://127.0.0.1:8787/serving-endpoints/iris/invocations"
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
