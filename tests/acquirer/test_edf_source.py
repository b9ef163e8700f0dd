"""`edf:PATH`: a file written by pyedflib replays with the right samples and stimuli."""

import numpy as np
import pytest

from amrwatch.services.acquirer.edf import EdfSource
from amrwatch.services.acquirer.source import SourceError, open_source

from .edf_files import quantum, write_edf

FS = 10000


def signal(n_ch=3, seconds=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 200, size=(n_ch, FS * seconds)).clip(-4900, 4900)


def read_all(src, frame=97):
    chunks = []
    while (c := src.read(frame)) is not None:
        chunks.append(c)
    return chunks


@pytest.mark.parametrize("bdf", [False, True])
def test_samples_and_annotated_stimuli(tmp_path, bdf):
    data = signal()
    ann = [(0.0, "stage baseline"), (0.5, "stim ZYG 15mA 0.2ms"), (1.25, "stim MAR"), (2.0, "stage decompression"),
           (2.5, "ZYG"), (2.7, "a comment the acquirer ignores")]
    path = write_edf(tmp_path / ("x.bdf" if bdf else "x.edf"), data, ["MENT", "OORIS", "OOCUL"], FS, ann, bdf=bdf)
    src = open_source(f"edf:{path}")
    assert [c.direction for c in src.montage.channels] == ["ZYG", "ZYG", "MAR"]
    chunks = read_all(src)
    got = np.concatenate([c.samples for c in chunks], axis=1)
    assert got.shape == data.shape and got.dtype == np.float32
    assert np.max(np.abs(got - data)) <= quantum(bdf=bdf) + 1e-3
    starts = [c.first_sample_index for c in chunks]
    assert starts == list(range(0, data.shape[1], 97))  # frames tile the file exactly
    stims = [s for c in chunks for s in c.stimuli]
    assert [(s.sample_index, s.direction) for s in stims] == [(5000, "ZYG"), (12500, "MAR"), (25000, "ZYG")]
    assert stims[0].intensity_ma == 15.0 and stims[0].width_ms == 0.2
    assert [st for c in chunks for st in c.stages] == [(0, "baseline"), (20000, "decompression")]


def test_stimuli_from_trigger_channel(tmp_path):
    data = signal(n_ch=2)
    trig = np.zeros(data.shape[1])
    for onset in (1000, 11000, 21000):
        trig[onset:onset + 5] = 4000.0
    path = write_edf(tmp_path / "t.edf", np.vstack([data, trig]), ["MENT", "OOCUL", "TRIG"], FS)
    src = EdfSource(str(path))
    assert src.montage.channels[2].kind == "trigger"
    stims = [s for c in read_all(src, 1000) for s in c.stimuli]
    assert [s.sample_index for s in stims] == [1000, 11000, 21000]
    assert [s.direction for s in stims] == ["ZYG", "MAR", "ZYG"]  # alternating the montage's directions


def test_millivolt_files_are_converted_to_microvolts(tmp_path):
    data = signal(n_ch=1) / 1000.0  # mV
    path = write_edf(tmp_path / "mv.edf", data, ["MENT"], FS, dims=["mV"], phys=5.0)
    got = np.concatenate([c.samples for c in read_all(EdfSource(str(path)))], axis=1)
    assert np.allclose(got, data * 1000.0, atol=quantum(5.0) * 1000 + 1e-3)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(f"edf:{tmp_path / 'missing.edf'}")
    junk = tmp_path / "junk.edf"
    junk.write_bytes(b"not an edf" * 100)
    with pytest.raises(SourceError, match="cannot be read"):
        open_source(f"edf:{junk}")
    with pytest.raises(SourceError, match="edf:PATH needs a file path"):
        open_source("edf:")
    with pytest.raises(SourceError, match="sim, file:PATH, edf:PATH or lsl:STREAM_NAME"):
        open_source("carrier-pigeon:x")
