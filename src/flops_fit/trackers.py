"""Experiment trackers: TensorBoard, MLflow and Weights & Biases, chosen by the ``logger`` config group.

``logger=none`` (the default) logs nothing. Otherwise ff-train logs every run it records under the
run's id (its loss curve, learning rate and throughput against the data units seen, its final loss,
and the plan's settings as parameters; a real run's curve live, as it is measured:
:class:`flops_fit.training.track.LiveLog`), and ff-analyze (and ff-plot) log the compute-optimal table,
the fitted exponents and the figures. A tracker's package is imported only when it is chosen;
each is an optional extra: ``pip install 'flops-fit[tensorboard]'`` (or ``[mlflow]``, ``[wandb]``).

Where the files go (``logger.save_dir``, default ``<run_dir>/logs/<name>``):

``tensorboard``  one event-file folder per run id, and ``analysis/`` (``plots/`` from ff-plot); written with TensorBoard's own
                 event writer (no torch, no TensorFlow): ``tensorboard --logdir <save_dir>``.
``mlflow``       ``logger.tracking_uri``, default a local file store ``<save_dir>/mlruns``
                 (``mlflow ui --backend-store-uri ...``); the experiment is ``logger.project``, each run
                 is named by its id and tagged ``flops_fit.sweep=<group>``.
``wandb``        ``logger.mode=offline`` (default: no network, no account; ``wandb sync <save_dir>/wandb``
                 uploads later) or ``online``; project ``logger.project``, group ``<group>``, run name = id.

``logger.group`` names the sweep in the tracker (default: the run_dir's folder name).

This module is below the stages and imports nothing from flops-fit but its error type.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from flops_fit.errors import FlopsFitError

# tracker -> (the module it needs, the extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


@dataclass
class LoggerConfig:
    """The ``logger`` group: which tracker, if any, and where it writes."""

    name: str = "none"  # none | tensorboard | mlflow | wandb
    save_dir: Optional[str] = None  # null: <run_dir>/logs/<name>
    project: str = "flops-fit"  # the MLflow experiment / the W&B project
    group: Optional[str] = None  # the sweep's name in the tracker (null: the run_dir's folder name)
    tracking_uri: Optional[str] = None  # mlflow: null -> a file store in <save_dir>/mlruns
    mode: str = "offline"  # wandb: offline (no network) | online


def check_logger(cfg: Mapping[str, Any] | None) -> dict:
    """``cfg`` checked: a known tracker whose package is installed, a known W&B mode. One line per problem."""
    out = {**LoggerConfig().__dict__, **dict(cfg or {})}
    name = out["name"]
    if name in (None, "none"):
        out["name"] = "none"
        return out
    if name not in TRACKERS:
        raise FlopsFitError(f"logger={name} is not a tracker; choose none, {', '.join(TRACKERS)}")
    module, extra = TRACKERS[name]
    if importlib.util.find_spec(module) is None:
        raise FlopsFitError(f"logger={name} needs the {module} package, which is not installed: "
                            f"pip install 'flops-fit[{extra}]' (or choose logger=none)")
    if out["mode"] not in ("offline", "online"):
        raise FlopsFitError(f"logger.mode={out['mode']!r} must be offline or online")
    return out


def open_tracker(cfg: Mapping[str, Any] | None, run_dir: str | os.PathLike) -> "Tracker | None":
    """The tracker ``cfg`` chooses for the sweep in ``run_dir``, or None for ``logger=none``."""
    cfg = check_logger(cfg)
    if cfg["name"] == "none":
        return None
    root = Path(run_dir)
    save_dir = Path(os.path.expanduser(cfg["save_dir"])) if cfg["save_dir"] else root / "logs" / cfg["name"]
    group = cfg["group"] or root.resolve().name
    cls = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}[cfg["name"]]
    return cls(cfg, save_dir, group)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"grid.points": 7, ...}``, lists as JSON; Nones left out."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v, default=str)
        elif v is not None:
            out[key] = v
    return out


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


class Tracker:
    """What the stages call. ``points``: dicts with ``step`` (data units seen) and metric values.

    A run is logged either at once (:meth:`log_run`) or live: :meth:`log_points` opens it and adds points as
    they are measured, and :meth:`log_run` then adds what the record holds beyond them (the remaining points,
    the learning rate at every point, the settings the record adds, the summary) and closes it. Thread-safe:
    ff-train's live poller and its main thread share one tracker.

    A run opened live is noted in ``<save_dir>/open/<group>/<run id>.json`` (the tracker's own id for it and the last
    step logged) until its record closes it. A later ff-train that resumes the killed run continues that
    tracker run from the step after it, instead of starting a second one of the same name."""

    name = "tracker"

    def __init__(self, cfg: dict, save_dir: Path, group: str):
        import threading

        self.cfg, self.save_dir, self.group = cfg, Path(save_dir), group
        self.save_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._live: dict[str, list] = {}  # run id -> [handle, last step logged]
        self._closed: set[str] = set()  # runs logged in full: a late live point never reopens them

    def _ledger(self, run_id: str) -> Path:
        return self.save_dir / "open" / self.group / f"{run_id}.json"  # per sweep: a shared save_dir holds several

    def _open(self, run_id: str, params: Mapping[str, Any]) -> list:
        """[handle, last step logged] for ``run_id``: the tracker run a killed ff-train left open, else a new one."""
        note = {}
        try:
            note = json.loads(self._ledger(run_id).read_text())
        except (OSError, ValueError):
            pass
        handle = self._start(run_id, params, "train", resume=note.get("id"))
        if note.get("id") is not None and self._id(handle) == note["id"]:
            self._params(handle, params)
            return [handle, note.get("last")]
        return [handle, None]

    def _note(self, run_id: str, live: list) -> None:
        path = self._ledger(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"id": self._id(live[0]), "last": live[1]}))
        os.replace(tmp, path)

    def log_points(self, run_id: str, params: Mapping[str, Any], points: list[dict]) -> None:
        """Live: open ``run_id`` (with ``params``) unless open, and log the ``points`` past those it has."""
        with self._lock:
            if run_id in self._closed:
                return
            live = self._live.get(run_id)
            if live is None:
                live = self._live[run_id] = self._open(run_id, params)
            new = [p for p in points if live[1] is None or p["step"] > live[1]]
            if new:  # the note changes only with the points (every poll reaches here, every few seconds)
                self._points(live[0], new)
                live[1] = max(p["step"] for p in new)
                self._note(run_id, live)

    def log_run(self, run_id: str, params: Mapping[str, Any], points: list[dict], summary: Mapping[str, float]) -> None:
        """The whole run from its record: a run opened live (here or by a killed ff-train) gets only what it lacks."""
        with self._lock:
            live = self._live.pop(run_id, None)
            if live is None:
                handle, last = self._open(run_id, params)
            else:
                handle, last = live
                self._params(handle, params)
            todo = []
            for p in points:
                if last is None or p["step"] > last:
                    todo.append(p)
                elif p.get("lr") is not None:  # logged live without the learning rate the record now gives
                    todo.append({"step": p["step"], "lr": p["lr"]})
            self._points(handle, todo)
            self._finish(handle, summary, max((p["step"] for p in points), default=0))
            self._closed.add(run_id)
            self._ledger(run_id).unlink(missing_ok=True)

    def close(self) -> None:
        """Close the runs still open live (their records were not written: killed, or failed elsewhere)."""
        with self._lock:
            for run_id, (handle, last) in list(self._live.items()):
                try:
                    self._finish(handle, {}, last or 0)
                except Exception:  # noqa: BLE001 - closing never fails a sweep
                    pass
            self._live.clear()

    # what each tracker writes: a run handle, settings, points, and the summary that closes it
    def _start(self, name: str, params: Mapping[str, Any], job_type: str, resume: str | None = None):
        """A handle for a new run, or for the run the tracker knows as ``resume`` when it still has it."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _id(self, handle) -> str:
        """The tracker's own id of the run behind ``handle``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _params(self, handle, params: Mapping[str, Any]) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _points(self, handle, points: list[dict]) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _finish(self, handle, summary: Mapping[str, float], step: int) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def log_analysis(self, params: Mapping[str, Any], table: list[dict], table_text: str,
                     summary: Mapping[str, float], figures: Iterable[Path], name: str = "analysis") -> None:
        raise NotImplementedError  # pragma: no cover - abstract


# ------------------------------------------------------------------------------------------ TensorBoard


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def _writer(self, folder: str):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        return EventFileWriter(str(self.save_dir / folder))

    @staticmethod
    def _scalar(tag: str, value: float):
        from tensorboard.compat.proto.summary_pb2 import Summary

        return Summary.Value(tag=tag, simple_value=float(value))

    @staticmethod
    def _text(tag: str, text: str):
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.compat.proto.types_pb2 import DT_STRING

        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
        tensor = TensorProto(dtype=DT_STRING, string_val=[text.encode("utf-8")],
                             tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
        return Summary.Value(tag=tag, metadata=meta, tensor=tensor)

    @staticmethod
    def _event(step: int, values: list):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        return Event(wall_time=time.time(), step=int(step), summary=Summary(value=values))

    def _start(self, name, params, job_type, resume=None):
        w = self._writer(name)  # a resumed run adds an event file to its folder, which TensorBoard reads as one run
        w.flops_fit_name = name
        if resume is None:
            self._params(w, params)
        return w

    def _id(self, w):
        return w.flops_fit_name

    def _params(self, w, params):
        table = "\n".join(f"| {k} | {v} |" for k, v in sorted(params.items()))
        w.add_event(self._event(0, [self._text("params", "| setting | value |\n|---|---|\n" + table)]))
        w.flush()

    def _points(self, w, points):
        for p in points:
            values = [self._scalar(k, v) for k, v in p.items() if k != "step" and v is not None]
            if values:
                w.add_event(self._event(p["step"], values))
        w.flush()  # seen by a TensorBoard reading the folder now

    def _finish(self, w, summary, step):
        try:
            values = [self._scalar(k, v) for k, v in summary.items() if v is not None]
            if values:
                w.add_event(self._event(step, values))
        finally:
            w.close()

    def log_analysis(self, params, table, table_text, summary, figures, name="analysis"):
        from tensorboard.compat.proto.summary_pb2 import Summary

        w = self._writer(name)
        try:
            w.add_event(self._event(0, [self._text("table", table_text)]))
            w.add_event(self._event(0, [self._scalar(k, v) for k, v in summary.items() if v is not None]))
            for path in figures:
                data = Path(path).read_bytes()
                try:
                    width, height = _png_size(data)
                except ValueError:
                    continue  # TensorBoard shows PNG images; other formats stay on disk
                image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
                w.add_event(self._event(0, [Summary.Value(tag=f"figures/{Path(path).stem}", image=image)]))
        finally:
            w.close()


# ------------------------------------------------------------------------------------------ MLflow


class MLflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, cfg, save_dir, group):
        super().__init__(cfg, save_dir, group)
        uri = cfg["tracking_uri"]
        if not uri:
            uri = (self.save_dir / "mlruns").resolve().as_uri()
            # MLflow 3 keeps its file store but asks for this opt-in; the local default is the file store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        found = self.client.get_experiment_by_name(cfg["project"])
        self.experiment = found.experiment_id if found else self.client.create_experiment(cfg["project"])

    def _run(self, name: str, params: Mapping[str, Any]):
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment, run_name=name, tags={"flops_fit.sweep": self.group})
        rid = run.info.run_id
        items = [Param(str(k)[:250], str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(rid, params=items[i:i + 100])
        return rid

    def _start(self, name, params, job_type, resume=None):
        if resume is not None:
            try:
                run = self.client.get_run(resume)
            except Exception:  # noqa: BLE001 - gone (another store, deleted): a new run
                run = None
            if run is not None:  # left open by a killed ff-train (or closed by an interrupted one): it goes on
                self.client.update_run(resume, status="RUNNING")
                return [resume, set(run.data.params)]
        return [self._run(name, params), set(params)]  # MLflow keeps a parameter's first value: add new ones only

    def _id(self, handle):
        return handle[0]

    def _params(self, handle, params):
        from mlflow.entities import Param

        rid, seen = handle
        items = [Param(str(k)[:250], str(v)[:6000]) for k, v in sorted(params.items()) if k not in seen]
        for i in range(0, len(items), 100):
            self.client.log_batch(rid, params=items[i:i + 100])
        seen.update(params)

    def _points(self, handle, points):
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        metrics = [Metric(k, float(v), ts, int(p["step"])) for p in points for k, v in p.items()
                   if k != "step" and v is not None]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(handle[0], metrics=metrics[i:i + 1000])

    def _finish(self, handle, summary, step):
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        metrics = [Metric(k, float(v), ts, int(step)) for k, v in summary.items() if v is not None]
        if metrics:
            self.client.log_batch(handle[0], metrics=metrics)
        self.client.set_terminated(handle[0])

    def log_analysis(self, params, table, table_text, summary, figures, name="analysis"):
        from mlflow.entities import Metric

        rid = self._run(name, params)
        ts = int(time.time() * 1000)
        self.client.log_batch(rid, metrics=[Metric(k, float(v), ts, 0) for k, v in summary.items() if v is not None])
        self.client.log_text(rid, table_text, "table.md")
        self.client.log_dict(rid, {"table": table}, "table.json")
        for path in figures:
            self.client.log_artifact(rid, str(path), "figures")
        self.client.set_terminated(rid)


# ------------------------------------------------------------------------------------------ W&B


class WandbTracker(Tracker):
    name = "wandb"

    def _init(self, name: str, params: Mapping[str, Any], job_type: str, resume: str | None = None):
        import wandb

        more = {"id": resume, "resume": "allow"} if resume is not None else {}
        return wandb.init(project=self.cfg["project"], name=name, group=self.group, job_type=job_type,
                          dir=str(self.save_dir), mode=self.cfg["mode"], config=dict(params), reinit="create_new",
                          settings=wandb.Settings(silent=True, console="off", x_disable_stats=True), **more)

    def _id(self, run):
        return run.id

    def _start(self, name, params, job_type, resume=None):
        try:
            run = self._init(name, params, job_type, resume)
        except Exception:  # noqa: BLE001 - the id still held (a killed process's W&B service lingers): a new run
            if resume is None:
                raise
            run = self._init(name, params, job_type)
        run.define_metric("tokens")
        run.define_metric("*", step_metric="tokens")
        return run

    def _params(self, run, params):
        run.config.update(dict(params), allow_val_change=True)

    def _points(self, run, points):
        for p in points:
            run.log({"tokens": p["step"], **{k: v for k, v in p.items() if k != "step" and v is not None}})

    def _finish(self, run, summary, step):
        try:
            for k, v in summary.items():
                if v is not None:
                    run.summary[k] = v
        finally:
            run.finish()

    def log_analysis(self, params, table, table_text, summary, figures, name="analysis"):
        import wandb

        run = self._init(name, params, name)
        try:
            if table:
                cols = list(table[0])
                run.log({"table": wandb.Table(columns=cols, data=[[row.get(c) for c in cols] for row in table])})
            for path in figures:
                run.log({f"figures/{Path(path).stem}": wandb.Image(str(path))})
            for k, v in summary.items():
                if v is not None:
                    run.summary[k] = v
        finally:
            run.finish()
