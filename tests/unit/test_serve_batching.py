"""declare.serve.batching (the adaptive Batcher) and declare.serve.joining / direct (which
requests may share a predict call), on a real event loop and a real thread pool. The real
server, under concurrent clients, is tested in tests/integration/test_serve_batching.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from declare.serve.batching import Batcher
from declare.serve.body import json_object


class Recorder:
    """A `run` that records its calls, answers each item doubled, and can be held."""

    def __init__(self, hold: float = 0.0) -> None:
        self.calls: list[list[int]] = []
        self.hold = hold
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> list[int]:
        with self.lock:
            self.calls.append(list(items))
        time.sleep(self.hold)
        if -1 in items:
            raise ValueError("minus one")
        return [2 * i for i in items]


def batcher(run: Any, size: int = 8, delay_ms: float = 5.0, key: Any = None) -> Batcher[int, int]:
    return Batcher(
        run,
        key=key or (lambda i: i % 2 if i >= 0 else 0),
        size=lambda i: 1,
        max_batch_size=size,
        max_delay_ms=delay_ms,
        executor=ThreadPoolExecutor(2),
    )


def test_a_lone_item_runs_at_once_alone() -> None:
    async def go() -> tuple[int, float, list[list[int]]]:
        run = Recorder()
        b = batcher(run, delay_ms=500.0)  # a long delay that a lone item must never wait for
        started = time.perf_counter()
        answer = await b.submit(4)
        return answer, time.perf_counter() - started, run.calls

    answer, seconds, calls = asyncio.run(go())
    assert answer == 8 and calls == [[4]]
    assert seconds < 0.4  # far below the 500 ms delay: it did not wait


def test_items_that_come_while_a_call_runs_go_together_each_getting_its_own_answer() -> None:
    async def go() -> tuple[list[int], list[list[int]]]:
        run = Recorder(hold=0.1)
        b = batcher(run, size=8)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.02)  # the first call is running now
        rest = [asyncio.ensure_future(b.submit(i)) for i in (2, 4, 6, 8, 10)]
        answers = await asyncio.gather(first, *rest)
        return answers, run.calls

    answers, calls = asyncio.run(go())
    assert answers == [0, 4, 8, 12, 16, 20]
    assert calls == [[0], [2, 4, 6, 8, 10]]


def test_only_items_of_one_key_share_a_call_and_a_call_holds_at_most_max_batch_size() -> None:
    async def go() -> tuple[list[int], list[list[int]]]:
        run = Recorder(hold=0.05)
        b = batcher(run, size=3)
        first = asyncio.ensure_future(b.submit(100))
        await asyncio.sleep(0.02)
        items = [1, 2, 3, 4, 5, 6, 7, 8]  # odd and even keys
        rest = [asyncio.ensure_future(b.submit(i)) for i in items]
        answers = await asyncio.gather(first, *rest)
        return answers, run.calls

    answers, calls = asyncio.run(go())
    assert answers == [200, *(2 * i for i in range(1, 9))]
    assert calls[0] == [100]
    assert all(len(call) <= 3 for call in calls)
    assert all(len({i % 2 for i in call}) == 1 for call in calls)  # one key per call
    assert sorted(i for call in calls[1:] for i in call) == list(range(1, 9))
    assert [1, 3, 5] in calls  # the oldest item's key first, in arrival order


def test_an_error_reaches_every_caller_of_that_call_and_not_the_next() -> None:
    async def go() -> list[Any]:
        run = Recorder(hold=0.05)
        b = batcher(run, size=8, key=lambda i: 0)
        first = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0.02)
        joined = [asyncio.ensure_future(b.submit(i)) for i in (-1, 4)]
        results = await asyncio.gather(first, *joined, return_exceptions=True)
        results.append(await b.submit(6))
        return results

    results = asyncio.run(go())
    assert results[0] == 4
    assert all(isinstance(r, ValueError) for r in results[1:3])
    assert results[3] == 12


def test_a_caller_that_gave_up_is_skipped() -> None:
    async def go() -> tuple[list[list[int]], int]:
        run = Recorder(hold=0.1)
        b = batcher(run, size=8, key=lambda i: 0)
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.02)
        gone = asyncio.ensure_future(b.submit(2))
        kept = asyncio.ensure_future(b.submit(3))
        await asyncio.sleep(0.01)
        gone.cancel()
        await first
        return run.calls, await kept

    calls, kept = asyncio.run(go())
    assert calls == [[1], [3]] and kept == 6


def test_under_load_a_small_batch_waits_for_more_up_to_its_delay() -> None:
    """After a call that ended with items waiting, the next small batch waits (up to
    max_delay_ms from its oldest item) for more of its key: here two items that come 30 ms
    after the first one join it, where a batch run at once would have held it alone."""

    async def go() -> list[list[int]]:
        run = Recorder(hold=0.05)
        b = batcher(run, size=4, delay_ms=150.0, key=lambda i: 0)
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(b.submit(2))  # waits for the first call: under load
        await asyncio.sleep(0.06)  # the first call ended; the second waits for more
        late = [asyncio.ensure_future(b.submit(i)) for i in (3, 4)]
        await asyncio.gather(first, second, *late)
        return run.calls

    assert asyncio.run(go()) == [[1], [2, 3, 4]]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        batcher(Recorder(), size=0)
    with pytest.raises(ValueError, match="max_delay_ms"):
        batcher(Recorder(), delay_ms=-1)


# -- which requests may be joined ------------------------------------------------------------


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True, as_frame=True)
    estimator = LogisticRegression(max_iter=500).fit(x, y)
    folder = tmp_path_factory.mktemp("iris") / "model"
    mlflow.sklearn.save_model(estimator, folder, signature=infer_signature(x, estimator.predict(x)))
    return mlflow.pyfunc.load_model(str(folder))


COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
JSON = "application/json"


def split(rows: list[list[Any]], **extra: Any) -> bytes:
    return json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}, **extra}).encode()


def records(rows: list[list[Any]]) -> bytes:
    return json.dumps(
        {"dataframe_records": [dict(zip(COLUMNS, r, strict=True)) for r in rows]}
    ).encode()


@pytest.mark.parametrize(
    ("body", "content_type", "joinable"),
    [
        (split([[5.1, 3.5, 1.4, 0.2]]), JSON, True),
        (split([[5.1, 3.5, 1.4, 0.2]]), "application/json; charset=UTF-8", True),
        (records([[5.1, 3.5, 1.4, 0.2], [6, 3, 5, 2]]), JSON, False),  # types differ by row
        (records([[5.1, 3.5, 1.4, 0.2], [6.0, 3.0, 5.0, 2.0]]), JSON, True),
        (split([[5.1, 3.5, 1.4, 0.2]]), "text/csv", False),
        (split([[5.1, 3.5, 1.4, 0.2]]), "application/json; charset=latin-1", False),
        (split([[5.1, 3.5, 1.4]]), JSON, False),  # a short row: MLflow's own error, alone
        (split([[5.1, 3.5, 1.4, [0.2]]]), JSON, False),  # not a scalar
        (split([]), JSON, False),
        (
            json.dumps(
                {"dataframe_split": {"columns": COLUMNS, "data": [[1] * 4], "index": [7]}}
            ).encode(),
            JSON,
            False,
        ),
        (json.dumps({"inputs": [[1, 2, 3, 4]]}).encode(), JSON, False),
        (
            json.dumps(
                {"dataframe_split": {"columns": COLUMNS, "data": [[1] * 4]}, "x": 1}
            ).encode(),
            JSON,
            False,
        ),
        (b"[1, 2]", JSON, False),
        (b"\xff", JSON, False),
        (split([[5.1, 3.5, 1.4, 0.2]], params={"a": [1]}), JSON, True),
        (
            json.dumps(
                {"dataframe_split": {"columns": COLUMNS, "data": [[1] * 4]}, "params": 3}
            ).encode(),
            JSON,
            False,
        ),
    ],
)
def test_what_the_joiner_takes(
    iris_model: Any, body: bytes, content_type: str, joinable: bool
) -> None:
    from declare.serve.joining import Joiner

    joiner = Joiner.for_model(iris_model, max_rows=64)
    assert joiner is not None
    assert (joiner.candidate(json_object(body, content_type)) is not None) is joinable


def test_joined_requests_get_their_own_rows_answers_and_params_and_types_keep_apart(
    iris_model: Any,
) -> None:
    from declare.serve.joining import Joiner

    joiner = Joiner.for_model(iris_model, max_rows=64)
    assert joiner is not None
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 5.6, 2.4], [5.9, 3.0, 4.2, 1.5]]
    one = joiner.candidate(json_object(split([rows[0]]), JSON))
    two = joiner.candidate(json_object(split(rows[1:]), JSON))
    ints = joiner.candidate(json_object(split([[6, 3, 5, 2]]), JSON))
    with_params = joiner.candidate(json_object(split([rows[0]], params={"a": 1}), JSON))
    assert one and two and ints and with_params
    assert one.key == two.key and ints.key != one.key and with_params.key != one.key
    expected = [iris_model.predict(iris_model_frame(r)).tolist() for r in (rows[:1], rows[1:])]
    answers = joiner.run([one, two])
    assert [json.loads(a or b"")["predictions"] for a in answers] == expected


def iris_model_frame(rows: list[list[float]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=COLUMNS)


def test_a_join_that_fails_sends_every_request_back_to_be_answered_alone(iris_model: Any) -> None:
    from declare.serve.joining import Joiner

    joiner = Joiner.for_model(iris_model, max_rows=64)
    assert joiner is not None
    good = joiner.candidate(json_object(split([[5.1, 3.5, 1.4, 0.2]]), JSON))
    text = joiner.candidate(
        json_object(split([["a", 3.5, 1.4, 0.2]]), JSON)
    )  # the schema says double
    assert good and text
    assert joiner.run([text]) == [None]
    assert joiner.run([good]) != [None]


def test_the_short_way_takes_numbers_for_the_schemas_columns_only(iris_model: Any) -> None:
    from declare.serve.direct import Direct

    direct = Direct.for_model(iris_model)
    assert direct is not None
    row = [5.1, 3.5, 1.4, 0.2]
    assert direct.rows(json_object(split([row]), JSON)) == [row]
    assert direct.rows(json_object(records([row, [6, 3, 5, 2]]), JSON)) == [row, [6, 3, 5, 2]]
    assert direct.rows(json_object(split([[True, 3.5, 1.4, 0.2]]), JSON)) is None  # a boolean
    assert direct.rows(json_object(split([[None, 3.5, 1.4, 0.2]]), JSON)) is None
    assert direct.rows(json_object(split([row], params={"a": 1}), JSON)) is None
    reordered = json.dumps({"dataframe_split": {"columns": COLUMNS[::-1], "data": [row]}})
    assert direct.rows(json_object(reordered.encode(), JSON)) is None
    answer = direct.answer([[row], [[6.7, 3.1, 5.6, 2.4]]])
    assert [json.loads(a or b"") for a in answer] == [{"predictions": [0]}, {"predictions": [2]}]
