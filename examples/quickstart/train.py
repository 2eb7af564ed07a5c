"""Train two versions of an iris classifier and register them in the embedded registry.

The registry is the project's own SQLite file (`mlflow.db`, as declare.yaml says) with
artifacts under `mlartifacts/`: a real MLflow registry with no server. Version 1 is a
logistic regression, version 2 a more strongly regularized one (C=0.05). Each is logged with
an input example, which declare uses to prove a replica ready with a real prediction.
Running it again registers nothing new.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import mlflow
import sklearn
from mlflow import MlflowClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent
TRACKING_URI = f"sqlite:///{HERE / 'mlflow.db'}"
MODEL = "iris"


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(TRACKING_URI)
    client = MlflowClient()
    have = {int(v.version) for v in client.search_model_versions(f"name='{MODEL}'")}
    if {1, 2} <= have:
        print(f"registry already holds {MODEL} versions {sorted(have)}: nothing to train")
        return
    experiment = mlflow.get_experiment_by_name("quickstart")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else mlflow.create_experiment(
            "quickstart", artifact_location=(HERE / "mlartifacts").as_uri()
        )
    )
    features, target = load_iris(return_X_y=True, as_frame=True)
    candidates = [
        LogisticRegression(max_iter=500),
        LogisticRegression(max_iter=500, C=0.05),
    ]
    for estimator in candidates[len(have) :]:
        with mlflow.start_run(experiment_id=experiment_id):
            estimator.fit(features, target)
            info = mlflow.sklearn.log_model(
                estimator,
                name="model",
                input_example=features.head(3),
                registered_model_name=MODEL,
                # Explicit: inferring them would load the model once more in a child process.
                pip_requirements=[
                    f"mlflow=={mlflow.__version__}",
                    f"scikit-learn=={sklearn.__version__}",
                ],
            )
        name = type(estimator).__name__
        print(f"registered {MODEL} version {info.registered_model_version}: {name}")


if __name__ == "__main__":
    main()
