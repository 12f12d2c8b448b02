"""Ask a served teacher (``infra.teacher_server``) for the logits of training rows, batch by batch.

A training batch's rows go out in requests of ``server_batch_size``, ``concurrency`` at a time,
each with a timeout and retried with exponential backoff; a teacher that stays away ends the
step with a message naming its URL (the re-run resumes from the last checkpoint).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from landing.errors import UserError
from landing.models.params import OnlineTeacher


class TeacherServiceError(UserError):
    """The teacher service did not answer, or answered for another model."""


class TeacherClient:
    """Callable row indices → logits over the rows it was built with (what ``OnlineTeacherCollator`` calls)."""

    def __init__(self, url: str, texts: Sequence[str], text_pairs: Sequence[str] | None, *, params: OnlineTeacher,
                 expected_teacher_id: str, num_labels: int) -> None:  # fmt: skip
        self.url, self.texts, self.text_pairs, self.params = url.rstrip("/"), list(texts), text_pairs, params
        self.expected_teacher_id, self.num_labels = expected_teacher_id, num_labels
        self.http = httpx.Client(timeout=params.timeout_s, limits=httpx.Limits(max_connections=params.concurrency))
        self.pool = ThreadPoolExecutor(max_workers=params.concurrency, thread_name_prefix="teacher")
        self.requests = 0

    def __call__(self, rows: Sequence[int]) -> np.ndarray:
        size = self.params.server_batch_size
        chunks = [list(rows[i : i + size]) for i in range(0, len(rows), size)]
        return np.concatenate(list(self.pool.map(self._ask, chunks)), axis=0)

    def _ask(self, rows: list[int]) -> np.ndarray:
        body = {"texts": [self.texts[i] for i in rows],
                "text_pairs": [self.text_pairs[i] for i in rows] if self.text_pairs is not None else None}  # fmt: skip
        attempts = self.params.retries + 1
        for attempt in range(attempts):
            try:
                response = self.http.post(f"{self.url}/v1/logits", json=body)
                response.raise_for_status()
                return self._checked(response.json(), len(rows))
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
                    raise TeacherServiceError(f"teacher service {self.url} refused a request: {exc}") from None
                if attempt + 1 == attempts:
                    raise TeacherServiceError(
                        f"teacher service {self.url} did not answer ({type(exc).__name__}: {exc}) after {attempts} "
                        "attempt(s); run the same command again: training resumes from its last checkpoint"
                    ) from None
                time.sleep(min(0.5 * 2**attempt, 8.0))
        raise AssertionError("unreachable")

    def _checked(self, answer: dict, rows: int) -> np.ndarray:
        if answer.get("teacher_id") != self.expected_teacher_id:
            raise TeacherServiceError(f"teacher service {self.url} serves {answer.get('teacher_id')!r}, "
                                      f"expected {self.expected_teacher_id!r}")  # fmt: skip
        logits = np.asarray(answer["logits"], dtype=np.float32)
        if logits.shape != (rows, self.num_labels) or not np.isfinite(logits).all():
            raise TeacherServiceError(f"teacher service {self.url}: expected {rows}×{self.num_labels} finite logits, "
                                      f"got shape {logits.shape}")  # fmt: skip
        self.requests += 1
        return logits

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.http.close()
