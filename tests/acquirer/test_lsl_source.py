"""`lsl:NAME`: an LSL outlet in the test feeds the source, markers become stimuli."""

import threading
import time
import uuid

import numpy as np
import pylsl
import pytest

from amrwatch.services.acquirer.source import SourceError, open_source

FS = 1000


def make_outlets(name):
    info = pylsl.StreamInfo(name, "EMG", 3, FS, pylsl.cf_float32, f"{name}-src")
    chans = info.desc().append_child("channels")
    for lbl in ("MENT", "OORIS", "OOCUL"):
        chans.append_child("channel").append_child_value("label", lbl)
    emg = pylsl.StreamOutlet(info, chunk_size=10)
    mk = pylsl.StreamOutlet(pylsl.StreamInfo(f"{name}-markers", "Markers", 1, 0, pylsl.cf_string, f"{name}-mk"))
    return emg, mk


def test_lsl_stream_with_markers():
    name = f"amrtest-{uuid.uuid4().hex[:8]}"
    emg, mk = make_outlets(name)
    src = open_source(f"lsl:{name}")
    assert src.markers is not None, "the companion marker stream was not found"
    assert [c.name for c in src.montage.channels] == ["MENT", "OORIS", "OOCUL"]
    assert [c.direction for c in src.montage.channels] == ["ZYG", "ZYG", "MAR"]
    deadline = time.monotonic() + 10
    while not (emg.have_consumers() and mk.have_consumers()) and time.monotonic() < deadline:
        time.sleep(0.01)
    n = 2000
    data = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    t0 = pylsl.local_clock()
    stim_at = {500: "stim ZYG", 1500: "stim MAR"}

    def push():
        for i in range(n):
            emg.push_sample(data[i].tolist(), t0 + i / FS)
            if i in stim_at:
                mk.push_sample([stim_at[i]], t0 + i / FS)
            if i % 100 == 0:
                time.sleep(0.01)

    th = threading.Thread(target=push)
    th.start()
    chunks = []
    deadline = time.monotonic() + 20
    while sum(c.n_samples for c in chunks) < n and time.monotonic() < deadline:
        chunks.append(src.read(100))
    th.join()
    for _ in range(20):  # markers may arrive after the last samples
        c = src.read(100)
        chunks.append(c)
    got = np.concatenate([c.samples for c in chunks], axis=1)
    assert got.shape == (3, n)
    assert np.array_equal(got, data.T)
    starts = [c.first_sample_index for c in chunks if c.n_samples]
    sizes = [c.n_samples for c in chunks if c.n_samples]
    assert starts == list(np.cumsum([0] + sizes[:-1]))
    stims = [s for c in chunks for s in c.stimuli]
    assert [s.direction for s in stims] == ["ZYG", "MAR"]
    for s, want in zip(stims, sorted(stim_at)):
        assert abs(s.sample_index - want) <= 1, (s.sample_index, want)
    src.close()


def test_missing_stream_is_a_clear_error():
    with pytest.raises(SourceError, match="no LSL stream named"):
        from amrwatch.services.acquirer.lsl import LslSource

        LslSource(f"nobody-{uuid.uuid4().hex[:6]}", resolve_timeout_s=0.5)


def test_lsl_stream_labels_are_read_by_the_montage_file(tmp_path):
    """A stream whose labels name no muscle is refused with the fix; a montage file names them."""
    from amrwatch.services.acquirer.labels import load_montage_file

    name = f"amrtest-{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(name, "EMG", 3, FS, pylsl.cf_float32, f"{name}-src")
    chans = info.desc().append_child("channels")
    for lbl in ("EMG1", "EMG2", "EMG3"):
        ch = chans.append_child("channel")
        ch.append_child_value("label", lbl)
        ch.append_child_value("unit", "microvolts")
    outlet = pylsl.StreamOutlet(info, chunk_size=10)
    try:
        with pytest.raises(SourceError, match="no channel of this recording can be analysed.*--montage"):
            open_source(f"lsl:{name}")
        m = tmp_path / "m.json"
        m.write_text('{"channels": [{"label": "EMG1", "muscle": "mentalis"}, '
                     '{"label": "EMG2", "muscle": "orbicularis_oculi"}, {"label": "EMG3", "kind": "aux"}]}')
        src = open_source(f"lsl:{name}", montage=load_montage_file(m))
        try:
            assert [(c.name, c.direction, c.kind) for c in src.montage.channels] == [
                ("EMG1", "ZYG", "emg"), ("EMG2", "MAR", "emg"), ("EMG3", None, "aux")]
            assert all("montage file" in c.taken_as for c in src.montage.channels)
        finally:
            src.close()
    finally:
        del outlet
