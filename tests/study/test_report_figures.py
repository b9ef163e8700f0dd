"""The report's figures as files and as the page shows them: real PNGs of the promised size
with something drawn on them, inlined byte for byte, stamped when the registry is synthetic.

(The figures were also looked at once by a person; these checks keep them from silently
breaking afterwards.)"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from amrwatch.study.cohort_stats import ReportSettings
from amrwatch.study.report import make_report
from amrwatch.study.report_figures import FIGURE_TITLES, OPTIONAL_FIGURES

from .conftest import copy_registry, png_size

SIZE = tuple(int(round(v * ReportSettings().dpi)) for v in ReportSettings().figure_size_in)
STAMP_RGB = np.array([0xB0, 0x3A, 0x2E])


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _stamped(png: bytes) -> bool:
    """Stamp-coloured text in the strip above the axes."""
    top = _pixels(png)[:14]
    return int((np.abs(top - STAMP_RGB).sum(axis=2) < 60).sum()) > 20


def test_every_figure_is_a_png_of_the_promised_size_with_a_drawing_on_it(study):
    figs = study.report_dir / "figures"
    assert sorted(p.stem for p in figs.glob("*.png")) == sorted(set(FIGURE_TITLES) - OPTIONAL_FIGURES)
    for name in set(FIGURE_TITLES) - OPTIONAL_FIGURES:
        png = (figs / f"{name}.png").read_bytes()
        assert png_size(png) == SIZE, name
        px = _pixels(png)
        assert px.shape[:2] == (SIZE[1], SIZE[0])
        ink = (px.sum(axis=2) < 600).mean()  # share of pixels that are not (near) white
        assert 0.01 < ink < 0.6, (name, ink)
        assert len(np.unique(px.reshape(-1, 3), axis=0)) > 30, name  # lines, text and fills, not a flat image
        assert _stamped(png), name


def test_the_page_inlines_the_same_figures_and_needs_nothing_from_outside(study):
    page = (study.report_dir / "report.html").read_text(encoding="utf-8")
    inlined = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    files = {name: (study.report_dir / "figures" / f"{name}.png").read_bytes()
             for name in set(FIGURE_TITLES) - OPTIONAL_FIGURES}
    assert sorted(base64.b64decode(s) for s in inlined) == sorted(files.values())
    assert not re.search(r"<link|<script|src=\"(?!data:)|url\(", page)
    assert page.count("SYNTHETIC REGISTRY") >= 2 and "This registry is synthetic." in page
    assert not re.search(r"\b(nan|inf|infinity)\b", page, re.IGNORECASE)
    # The numbers the page prints are the JSON's (spot checks of each section).
    res = json.loads((study.report_dir / "report.json").read_text())["results"]
    d = res["courses"]["disappearance"]
    assert f"<b>{d['disappeared']} of {d['n']}</b>" in page and f"<b>{100 * d['rate']:.1f}%</b>" in page
    assert f"<b>{res['multivariable']['auc']['value']:.3f}</b>" in page
    assert f"<b>{res['validation']['auc']['value']:.3f}</b>" in page


def test_a_registry_recorded_live_gets_no_synthetic_stamp(study, tmp_path: Path):
    copy_registry(study.data, tmp_path / "data")
    res = make_report(tmp_path / "data", tmp_path / "report")
    assert not res.synthetic
    page = res.html.read_text(encoding="utf-8")
    assert "SYNTHETIC REGISTRY" not in page and "This registry is synthetic." not in page
    for path in res.figures.values():
        png = path.read_bytes()
        assert png_size(png) == SIZE and not _stamped(png)


def test_figure_size_is_a_setting(study, tmp_path: Path):
    res = make_report(study.data, tmp_path / "r", settings=ReportSettings(figure_size_in=(8.0, 5.5), dpi=90,
                                                                          bootstrap_resamples=0))
    assert {png_size(p.read_bytes()) for p in res.figures.values()} == {(720, 495)}
