"""TrainPanel's order of work and its state around a run, with the slow parts faked: the run
cache is a dict (or, where what is left on disk matters, the real one in the test's own cache
folder), training calls the progress callback and then waits for the test, and the kernel's
event loop is a queue the test runs by hand. Each test takes a fraction of a second."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import itertools
import threading
import warnings

import pytest

from decorr_lite import plots, runs, train, widgets
from decorr_lite.data.cifar10 import CacheWarning
from decorr_lite.paths import cache_dir
from decorr_lite.train import TrainConfig, TrainResult, run_key

TIMEOUT = 30  # seconds: only reached when something hangs


@pytest.fixture
def settings(tmp_path):
    return {"data_root": str(tmp_path), "dim": 16, "steps": 4}  # no data there: nothing can really train


def fake_run(config: TrainConfig, path=None) -> TrainResult:
    final = {"steps": 4, "knn_top1": 0.5, "effective_rank": 3.0, "verdict": "no collapse"}
    return TrainResult(config.as_dict(), [{"step": 0}, {"step": 4}], final, {}, path=path)


@pytest.fixture
def cache(monkeypatch):
    """The run cache as {run key: run}: ``runs.save_run`` writes a folder and keeps the run,
    ``cached_run`` serves it while its folder exists."""
    store: dict[str, TrainResult] = {}

    def cached_run(config=None, **changes):
        found = store.get(run_key(config))
        return found if found is not None and found.path.exists() else None

    def save_run(result, key):
        result.path = cache_dir() / "runs" / key
        result.path.mkdir(parents=True)
        store[key] = result
        return result.path

    monkeypatch.setattr(train, "cached_run", cached_run)
    monkeypatch.setattr(runs, "save_run", save_run)
    return store


def put(store: dict, config: TrainConfig) -> TrainResult:
    """Write a finished run of ``config`` to the fake cache (a folder under the run cache)."""
    run = fake_run(config)
    runs.save_run(run, run_key(config))
    return run


class FakeTraining:
    """``train_ssl``: calls the callback after each of 4 steps, sets ``evaluating``, waits for
    ``finish`` (the final evaluation), then returns the run (cached first with ``cache=True``,
    as train_ssl does), or raises ``fail``. ``calls`` records the keywords of each call."""

    def __init__(self) -> None:
        self.evaluating, self.finish = threading.Event(), threading.Event()
        self.fail: BaseException | None = None
        self.calls: list[dict] = []

    def __call__(self, config, *, cache=True, progress=True, callback=None, **kwargs):
        self.calls.append({"cache": cache, "progress": progress, **kwargs})
        for done in range(1, 5):
            callback(done, 4)
        self.evaluating.set()
        assert self.finish.wait(TIMEOUT)
        if self.fail is not None:
            raise self.fail
        run = fake_run(config)
        if cache:
            runs.save_run(run, run_key(config))
        return run


@pytest.fixture
def fake_training(monkeypatch):
    """Only ``train_ssl`` faked: the run cache is the real one (the test's own folder)."""
    fake = FakeTraining()
    monkeypatch.setattr(train, "train_ssl", fake)
    return fake


@pytest.fixture
def training(cache, fake_training):
    return fake_training


def draw(result):
    return plots.new_axes(1)[0]


# --------------------------------------------------------------------------- prefetch


def test_a_combination_chosen_while_prefetch_draws_is_drawn_before_the_rest(cache, settings, fake_loop):
    loop = fake_loop
    terms = widgets.term_controls("vicreg")
    combos = []
    for on in itertools.product((True, False), repeat=len(terms)):
        weights = {k: (default if o else 0.0) for (k, (_, default)), o in zip(terms.items(), on)}
        config = TrainConfig(**settings, loss="vicreg", **weights)
        put(cache, config)
        combos.append(run_key(config))
    drawn = []

    def drawing(result):
        drawn.append(run_key(TrainConfig(**result.config)))
        return draw(result)

    panel = widgets.TrainPanel("vicreg", draw=drawing, settings=settings)
    assert drawn == [combos[0]]  # the chosen setting (every term on), drawn at once
    for thread in threading.enumerate():  # the prefetch thread has found the other seven
        if thread.name == "TrainPanel prefetch":
            thread.join(TIMEOUT)
    served = []

    def click():  # the student's click, queued behind what the prefetch had queued by then
        served.append(len(drawn))
        panel.controls["sim_coeff_on"].value = False

    loop.add_callback(click)
    loop.run()
    requested = run_key(panel.config())
    assert panel.result is not None and run_key(TrainConfig(**panel.result.config)) == requested
    # at most one prefetched figure was drawn before the click was handled, and the click drew its own
    assert served[0] <= 2 and drawn[served[0]] == requested, (served, drawn.index(requested))
    assert sorted(drawn) == sorted(combos)  # then the prefetch went on: each drawn once


# --------------------------------------------------------------------------- training runs


def test_cancel_during_the_final_evaluation_caches_and_shows_nothing(fake_training, settings):
    """On the real run cache: the run is trained without it and never written, so nothing is
    left behind, not even a damaged entry (a "current" naming a removed version)."""
    panel = widgets.TrainPanel("vicreg", draw=draw, settings=settings)
    assert train.cached_run(panel.config()) is None
    panel.train()
    assert fake_training.evaluating.wait(TIMEOUT)  # every step is done: no callback will come again
    panel.cancel_button.click()
    fake_training.finish.set()
    panel.join(timeout=TIMEOUT)
    assert [call["cache"] for call in fake_training.calls] == [False]
    assert isinstance(panel.error, widgets.TrainingCancelled) and "cancelled" in panel.status.value
    assert panel.result is None and panel.trained == 0 and not panel.training
    assert not panel.train_button.disabled and panel.cancel_button.disabled and panel.output.outputs == ()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # a damaged entry would warn
        assert train.cached_run(panel.config()) is None
    assert not (cache_dir() / "runs" / run_key(panel.config())).exists()


def test_a_run_that_ends_uncancelled_is_in_the_real_run_cache(fake_training, settings):
    panel = widgets.TrainPanel("vicreg", draw=draw, settings=settings)
    panel.train()
    fake_training.finish.set()
    panel.join(timeout=TIMEOUT)
    assert panel.error is None and panel.trained == 1 and panel.result.path is not None
    found = train.cached_run(panel.config())
    assert found is not None and found.from_cache and found.final == panel.result.final
    assert found.path == panel.result.path  # the version that save_run wrote, named by "current"


def test_cancel_after_training_returned_but_before_the_run_is_shown_still_counts(training, cache, settings, fake_loop):
    loop = fake_loop  # in a kernel, the run is shown by a callback on the main thread
    panel = widgets.TrainPanel("vicreg", draw=draw, settings=settings, prefetch=False)
    panel.train()
    training.finish.set()
    panel.join(timeout=TIMEOUT)  # train_ssl has returned; the run is neither cached nor shown yet
    assert panel.training and not panel.cancel_button.disabled and len(loop.ready) == 1
    assert train.cached_run(panel.config()) is None
    panel.cancel_button.click()
    loop.run()
    assert isinstance(panel.error, widgets.TrainingCancelled) and "cancelled" in panel.status.value
    assert panel.result is None and panel.trained == 0 and not panel.training and not panel.train_button.disabled
    assert train.cached_run(panel.config()) is None and not cache


def test_a_run_that_ends_uncancelled_is_cached_and_shown(training, settings):
    panel = widgets.TrainPanel("vicreg", draw=draw, settings=settings)
    panel.train()
    assert training.evaluating.wait(TIMEOUT)
    training.finish.set()
    panel.join(timeout=TIMEOUT)
    assert panel.error is None and panel.trained == 1 and panel.result is not None and not panel.training
    assert train.cached_run(panel.config()) is panel.result and "trained in" in panel.status.value
    assert panel.train_button.disabled and panel.cancel_button.disabled and panel.remaining.value == ""


def test_the_time_left_shows_beside_the_progress_bar(training, settings):
    panel = widgets.TrainPanel("vicreg", draw=draw, settings=settings)
    assert "press" in panel.status.value and "minute" not in panel.status.value and "laptop" not in panel.status.value
    panel.train()
    assert training.evaluating.wait(TIMEOUT)  # 4 of 4 steps: the final evaluation
    assert panel.progress.value == panel.progress.max == 4 and panel.remaining.value == "final evaluation…"
    assert "training in the background" in panel.status.value
    training.finish.set()
    panel.join(timeout=TIMEOUT)
    assert panel.remaining.value == ""


@pytest.mark.parametrize("ends", ["trained", "failed"])
def test_a_setting_chosen_while_a_run_trains_offers_train_when_the_run_ends(training, settings, ends):
    panel = widgets.TrainPanel("vicreg", draw=draw, settings=settings)
    panel.train()
    assert training.evaluating.wait(TIMEOUT)
    panel.controls["cov_coeff_on"].value = False  # another setting, while the first one trains
    assert "busy" in panel.status.value and panel.train_button.disabled
    if ends == "failed":
        training.fail = RuntimeError("out of memory")
    training.finish.set()
    if ends == "failed":
        with pytest.raises(RuntimeError):
            panel.join(timeout=TIMEOUT)
    else:
        panel.join(timeout=TIMEOUT)
    # nothing trains: the chosen setting (not trained) can be trained now
    assert not panel.training and panel.result is None and panel.cancel_button.disabled
    assert not panel.train_button.disabled and "busy" not in panel.status.value and "press" in panel.status.value
    if ends == "failed":
        assert "training failed" in panel.status.value and panel.trained == 0
    else:
        assert panel.trained == 1
        panel.controls["cov_coeff_on"].value = True  # back to the run that trained: shown
        assert panel.result is not None and panel.train_button.disabled


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("loss, term", [("vicreg", "sim_coeff"), ("barlow", "lambd")])
def test_a_term_the_settings_weigh_zero_starts_switched_off(cache, settings, loss, term):
    default = widgets.term_controls(loss)[term][1]
    panel = widgets.TrainPanel(loss, draw=lambda result, at=None: draw(result), settings={**settings, term: 0.0})
    box, slider = panel.controls[f"{term}_on"], panel.controls[term]
    assert not box.value and panel.config().weights[term] == 0.0
    assert slider.value == pytest.approx(default) and 10**slider.min < slider.value < 10**slider.max
    box.value = True  # switched on: the loss's default weight
    assert panel.config().weights[term] == pytest.approx(default)


@pytest.mark.parametrize("given", [{"sim_coeff": -1.0}, {"weights": {"sim_coeff": -1.0}}], ids=["keyword", "mapping"])
def test_a_negative_weight_in_the_settings_is_refused_by_name(cache, settings, given):
    with pytest.raises(ValueError, match="sim_coeff must be a finite number >= 0, got -1.0"):
        widgets.TrainPanel("vicreg", draw=draw, settings={**settings, **given})


# --------------------------------------------------------------------------- drawing ahead


class _Recorder:
    def __init__(self) -> None:
        self.drawn = []

    def _draw_ahead(self, result, at) -> None:
        self.drawn.append(result)


def test_figures_are_drawn_ahead_by_panel_then_clicks_away_one_per_turn_of_the_loop(fake_loop):
    ahead = widgets._DrawAhead()
    first, second = _Recorder(), _Recorder()
    ahead.add((1, 0), second, "second panel's own", None)
    ahead.add((0, 2), first, "two clicks away", None)
    ahead.add((0, 1), first, "one click away", None)
    assert len(fake_loop.ready) == 1  # one callback scheduled for all three
    fake_loop.run()
    assert first.drawn == ["one click away", "two clicks away"] and second.drawn == ["second panel's own"]


def test_no_figure_is_drawn_ahead_while_the_student_clicks(fake_loop, monkeypatch):
    ahead = widgets._DrawAhead()
    panel = _Recorder()
    ahead.last_request = widgets.time.monotonic()  # a click just now
    ahead.add((0, 1), panel, "neighbour", None)
    fn, args = fake_loop.ready.popleft()
    fn(*args)
    assert panel.drawn == [] and len(fake_loop.ready) == 1  # put off, not dropped
    ahead.last_request = float("-inf")  # quiet again
    fake_loop.run()
    assert panel.drawn == ["neighbour"]
