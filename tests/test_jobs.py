"""TrainingJob on its own, without ipywidgets: a run in a thread, its progress and time left,
cancel at every stage until the hand-over, errors, and the hand-over on the kernel's main thread
(a fake event loop the test runs by hand). ``train_ssl`` is faked; the run cache is the real
one, in the test's own folder, so what a job leaves on disk is what the user would find."""

from __future__ import annotations

import threading
import warnings

import pytest

from decorr_lite import train
from decorr_lite.data.cifar10 import CacheWarning
from decorr_lite.jobs import TrainingCancelled, TrainingJob, estimate_remaining, remaining_text
from decorr_lite.paths import cache_dir
from decorr_lite.train import TrainConfig, TrainResult, run_key

TIMEOUT = 30  # seconds: only reached when something hangs


@pytest.fixture
def config(tmp_path):
    return TrainConfig(data_root=str(tmp_path), dim=16, steps=4)  # no data there: nothing can really train


class Clock:
    """A clock that reads what the fake training sets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTraining:
    """``train_ssl``: step ``i`` ends at clock ``times[i]``, then the callback; after the last
    step it sets ``evaluating`` and waits for ``finish`` (the final evaluation), then returns a
    run, or raises ``fail``. With ``pause_after``, it sets ``paused`` after that step and waits
    for ``resume`` before the next. ``calls``: the keywords of each call."""

    def __init__(self, clock: Clock, times=(2.0, 5.0, 6.0, 7.0)) -> None:
        self.clock, self.times = clock, times
        self.evaluating, self.finish = threading.Event(), threading.Event()
        self.paused, self.resume = threading.Event(), threading.Event()
        self.pause_after: int | None = None
        self.fail: BaseException | None = None
        self.calls: list[dict] = []
        self.steps_done = 0

    def __call__(self, config, *, cache=True, progress=True, callback=None, **kwargs):
        self.calls.append({"cache": cache, "progress": progress, **kwargs})
        total = len(self.times)
        for done, t in enumerate(self.times, start=1):
            self.clock.now = t
            self.steps_done = done
            callback(done, total)
            if done == self.pause_after:
                self.paused.set()
                assert self.resume.wait(TIMEOUT)
        self.evaluating.set()
        assert self.finish.wait(TIMEOUT)
        self.clock.now += 1.0
        if self.fail is not None:
            raise self.fail
        final = {"steps": total, "knn_top1": 0.5, "effective_rank": 3.0, "verdict": "no collapse"}
        return TrainResult(config.as_dict(), [{"step": 0}, {"step": total}], final, {})


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def training(clock, monkeypatch):
    fake = FakeTraining(clock)
    monkeypatch.setattr(train, "train_ssl", fake)
    return fake


class Outcome:
    """The job's callbacks, recording what they got and on which thread."""

    def __init__(self) -> None:
        self.progress: list[tuple] = []
        self.results: list = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.ended = threading.Event()

    def kwargs(self) -> dict:
        return {"on_progress": self.on_progress, "on_result": self.on_result, "on_error": self.on_error}

    def on_progress(self, done, total, seconds_left) -> None:
        self.progress.append((done, total, seconds_left))

    def on_result(self, result) -> None:
        self.results.append(result)
        self.threads.append(threading.current_thread())
        self.ended.set()

    def on_error(self, error) -> None:
        self.errors.append(error)
        self.threads.append(threading.current_thread())
        self.ended.set()


def not_cached(config) -> bool:
    """Neither a run nor a damaged entry (which would warn) in the run cache."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        found = train.cached_run(config)
    return found is None and not (cache_dir() / "runs" / run_key(config)).exists()


# --------------------------------------------------------------------------- the estimate


def test_the_time_left_is_the_mean_step_time_since_the_first_step_times_the_steps_left():
    assert estimate_remaining((1, 10.0), (1, 10.0), 10) is None  # one step: nothing timed yet
    assert estimate_remaining((1, 10.0), (3, 14.0), 10) == pytest.approx(2.0 * 7)  # 2 s per step, 7 to go
    assert estimate_remaining((1, 10.0), (5, 11.0), 9) == pytest.approx(0.25 * 4)
    assert estimate_remaining((1, 10.0), (10, 19.0), 10) == 0.0  # all done: the final evaluation
    assert estimate_remaining((1, 10.0), (12, 21.0), 10) == 0.0  # never negative


def test_the_time_left_in_words_is_said_to_be_measured_on_this_machine():
    assert remaining_text(None) == "timing the first steps…"
    assert remaining_text(0.0) == "final evaluation…"
    assert remaining_text(0.2) == "about 1 s of training left on this machine"
    assert remaining_text(42.4) == "about 42 s of training left on this machine"
    assert remaining_text(99.0) == "about 99 s of training left on this machine"
    assert remaining_text(150.0) == "about 2 min of training left on this machine"
    assert all("laptop" not in remaining_text(s) for s in (None, 0.0, 5.0, 500.0))


# --------------------------------------------------------------------------- runs


def test_a_job_trains_in_its_thread_reports_progress_and_caches_the_run(training, config):
    outcome = Outcome()
    job = TrainingJob(config, clock=training.clock, **outcome.kwargs())
    assert not job.running and not_cached(config)
    job.start()
    assert job.running and job.thread is not threading.current_thread()
    assert training.evaluating.wait(TIMEOUT)
    # timed from the end of step 1 (t = 2): 3 s for step 2, then 1 s each: the mean step times the steps left
    assert outcome.progress == [(1, 4, None), (2, 4, 3.0 * 2), (3, 4, 2.0 * 1), (4, 4, 0.0)]
    assert job.running and not outcome.ended.is_set()
    training.finish.set()
    job.join(TIMEOUT)
    assert outcome.ended.is_set() and outcome.errors == [] and job.error is None
    assert outcome.results == [job.result] and not job.running and job.seconds == pytest.approx(8.0)
    assert [call["cache"] for call in training.calls] == [False]  # stored by the job, not by train_ssl
    found = train.cached_run(config)
    assert found is not None and found.from_cache and found.final == job.result.final
    assert job.result.path == found.path
    assert not job.cancel()  # handed over: too late to cancel


def test_a_run_the_cache_holds_by_now_is_loaded_not_trained(training, config):
    from decorr_lite import runs

    first = TrainingJob(config)
    first.start()
    training.finish.set()
    first.join(TIMEOUT)
    path = first.result.path
    outcome = Outcome()
    second = TrainingJob(config, **outcome.kwargs())
    second.start()
    second.join(TIMEOUT)
    assert len(training.calls) == 1 and outcome.results[0].from_cache and outcome.results[0].path == path
    assert runs.cached_run(config).path == path  # not written again


def test_cancel_during_the_steps_stops_after_the_current_one_and_caches_nothing(training, config):
    training.pause_after = 2
    outcome = Outcome()
    job = TrainingJob(config, clock=training.clock, **outcome.kwargs())
    job.start()
    assert training.paused.wait(TIMEOUT)
    assert job.cancel() and job.cancelled and job.running
    training.resume.set()
    job.join(TIMEOUT)
    assert training.steps_done == 3 and [p[0] for p in outcome.progress] == [1, 2]  # step 3's callback raised
    assert len(outcome.errors) == 1 and isinstance(job.error, TrainingCancelled) and outcome.errors[0] is job.error
    assert "after 3 of 4 steps" in str(job.error) and outcome.results == [] and job.result is None
    assert not training.evaluating.is_set() and not job.running and not_cached(config)


def test_cancel_during_the_final_evaluation_caches_nothing_and_leaves_no_damaged_entry(training, config):
    outcome = Outcome()
    job = TrainingJob(config, **outcome.kwargs())
    assert not_cached(config)
    job.start()
    assert training.evaluating.wait(TIMEOUT)  # every step is done: train_ssl calls back no more
    assert job.cancel()
    training.finish.set()
    job.join(TIMEOUT)
    assert isinstance(job.error, TrainingCancelled) and "final evaluation" in str(job.error)
    assert outcome.results == [] and job.result is None and not_cached(config)
    assert not (cache_dir() / "runs").exists() or not any((cache_dir() / "runs").iterdir())


@pytest.fixture
def trained_job(training, config, fake_loop):
    """A job whose training has returned: its hand-over waits for the main thread (``fake_loop``)."""
    outcome = Outcome()
    job = TrainingJob(config, **outcome.kwargs())
    job.start()
    training.finish.set()
    job.join(TIMEOUT)
    return job, outcome, fake_loop


def test_the_outcome_is_handed_over_on_the_main_thread_and_cached_only_then(trained_job, config):
    job, outcome, loop = trained_job
    assert len(loop.ready) == 1 and job.running and outcome.results == [] and not_cached(config)
    loop.run()
    assert outcome.threads == [threading.main_thread()] and outcome.results == [job.result]
    assert not job.running and train.cached_run(config) is not None


def test_cancel_after_training_returned_but_before_the_hand_over_still_counts(trained_job, config):
    job, outcome, loop = trained_job
    assert job.error is None and job.result is not None and job.running
    assert job.cancel()
    loop.run()
    assert outcome.threads == [threading.main_thread()] and outcome.results == []
    assert isinstance(job.error, TrainingCancelled) and outcome.errors == [job.error] and job.result is None
    assert not job.running and not job.cancel() and not_cached(config)


def test_an_error_in_training_is_handed_over_and_nothing_is_cached(training, config):
    training.fail = RuntimeError("out of memory")
    outcome = Outcome()
    job = TrainingJob(config, **outcome.kwargs())
    job.start()
    training.finish.set()
    job.join(TIMEOUT)
    assert outcome.errors == [training.fail] and job.error is training.fail and outcome.results == []
    assert not job.running and not_cached(config)


def test_a_job_runs_once(training, config):
    job = TrainingJob(config)
    job.start()
    with pytest.raises(RuntimeError, match="runs once"):
        job.start()
    training.finish.set()
    job.join(TIMEOUT)
