"""Exporting for the command line: :func:`diag.export_causal_lm` with a progress bar, a
printable validation report, and a way on for ``compare`` when the validation fails.

Example::

    exported = export_model(model)                # cached under $DIAG_CACHE/onnx/...
    print(exported.format_report())
    exported = export_model(model, "out/model.onnx", force=True)
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from diag.cli.progress import progress

if TYPE_CHECKING:  # the exporter is loaded by the commands that export only
    from diag.export.check.validate import ValidationReport
    from diag.export.plan.export_options import ExportOptions
    from diag.export.record.result import ExportResult


@dataclass
class ExportedModel:
    """An exported model and how it compares with torch: what
    :func:`diag.export_causal_lm` returned, or the message of its failed validation.
    """

    path: str
    #: what the export returned (None when its validation failed: no result then)
    result: ExportResult | None = None
    #: set when the validation failed: the message of the library
    failure: str | None = None
    #: keeps a temporary folder alive as long as the model is used
    _tmp: Any = field(default=None, repr=False)

    @property
    def cached(self) -> bool:
        """True when the export came from the export cache."""
        return self.result is not None and self.result.cached

    @property
    def validation(self) -> ValidationReport | None:
        """The validation report (None when the export was not verified, failed, or came
        from a cache entry written without verification)."""
        return self.result.validation if self.result is not None else None

    @property
    def passed(self) -> bool:
        """True when the validation ran and every difference is within tolerance."""
        return self.failure is None and self.validation is not None and bool(self.validation.ok)

    def files(self) -> list[str]:
        """The files of the export (the .onnx file, its external data, its sidecar)."""
        folder = os.path.dirname(self.path)
        base = os.path.basename(self.path)
        names = sorted(
            n for n in os.listdir(folder) if n.startswith(base) and not n.startswith(".")
        )
        return [os.path.join(folder, n) for n in names]

    def format_report(self) -> str:
        """The largest difference of every output group per input set, then PASS/FAIL."""
        if self.failure is not None:
            return f"{self.failure}\nvalidation: FAIL"
        if self.validation is None:
            return (
                "validation: not run (the export was not verified: a file ONNX Runtime's "
                "CPU provider cannot run, or a cache entry written without verification)"
            )
        table = self.validation.table()
        # the library's table ends with its own verdict line; keep ours only
        lines = [line for line in table.splitlines() if not line.startswith("tolerance")]
        verdict = "PASS" if self.validation.ok else "FAIL"
        atol = self.validation.atol
        raised = any(row.get("tolerance", atol) != atol for row in self.validation.rows)
        lines.append(
            f"validation: {verdict} (largest difference {self.validation.max_abs:.3g}, "
            f"tolerance {atol:g}"
            + ("; (<= x) marks a tolerance raised to the float32 noise" if raised else "")
            + ")"
        )
        return "\n".join(lines)


def _quiet_exporter_logs() -> None:
    # torch's ONNX exporter warns about every optional library it does not find
    # (torchvision...): noise for a command line user
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export_model(
    model: Any,
    filename: str | None = None,
    verify: bool = True,
    force: bool = False,
    options: ExportOptions | None = None,
) -> ExportedModel:
    """Exports ``model`` with :func:`diag.export_causal_lm` (reusing its cache) and its
    ``options`` (None: the defaults).

    A validation failure does not raise: the result says ``passed=False`` and holds the
    library's message, and the file is kept (the library only refuses to cache it).
    """
    # imported here, as below: the exporter is loaded by the commands that export
    from diag.export import ExportValidationError, export_causal_lm
    from diag.export.plan.export_options import EXPORT_DEFAULTS

    _quiet_exporter_logs()
    keywords = (options or EXPORT_DEFAULTS).keywords()
    with progress(total=1, desc="export to ONNX") as bar:
        try:
            result = export_causal_lm(model, filename, verify=verify, force=force, **keywords)
        except ExportValidationError as exc:
            bar.update(1)
            if filename is None:
                raise RuntimeError(
                    f"the ONNX export differs from torch beyond tolerance: {exc}"
                ) from exc
            return ExportedModel(os.path.abspath(filename), failure=str(exc))
        bar.update(1)
    return ExportedModel(result.filename, result)


def export_for_comparison(
    model: Any, force: bool = False, options: ExportOptions | None = None
) -> ExportedModel:
    """The export ``generate --backend onnx`` and ``compare`` run.

    It comes from the export cache, verified. When the validation fails the export is
    not cached by the library, so it is written again, unverified, into a temporary
    folder: the comparison then shows where the tokens part, which is what one needs to
    find out why (a warning on stderr says so).
    """
    try:
        return export_model(model, verify=True, force=force, options=options)
    except RuntimeError as exc:
        if not isinstance(exc.__cause__, AssertionError):
            raise
        tmp = tempfile.TemporaryDirectory(prefix="diag-export-", ignore_cleanup_errors=True)
        path = os.path.join(tmp.name, "model.onnx")
        sys.stderr.write(
            "diag: warning: the ONNX export fails its validation against torch; "
            "going on with it to show where the generations part.\n"
        )
        from diag.export import export_causal_lm
        from diag.export.plan.export_options import EXPORT_DEFAULTS

        keywords = (options or EXPORT_DEFAULTS).keywords()
        with progress(total=1, desc="export to ONNX (unverified)") as bar:
            result = export_causal_lm(model, path, verify=False, force=True, **keywords)
            bar.update(1)
        return ExportedModel(path, result, failure=str(exc.__cause__), _tmp=tmp)
