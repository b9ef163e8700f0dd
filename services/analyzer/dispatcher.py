"""`MessageDispatcher`: decoded bus messages routed to one `AnalyzerEngine` per session.

The live analyzer service and the offline paths (`analyze_messages`, `amrwatch
analyze` on an archive) share it, so a message reaches the engine the same way
whether it comes off the bus or out of an archive.
"""

from __future__ import annotations

from ...proto.messages import EmgFrame, Message, SessionEnd, SessionStart, StageMarker, Stimulus
from .engine import AnalyzerEngine, Output
from .settings import AnalyzerSettings


class MessageDispatcher:
    """Routes decoded bus messages to an engine per session (shared by the live service)."""

    def __init__(self, settings: AnalyzerSettings | None = None, source: str = "analyze") -> None:
        self.settings = settings or AnalyzerSettings()
        self.source = source
        self.engine: AnalyzerEngine | None = None
        self.session_id: str | None = None

    def start(self, msg: SessionStart) -> list[Output]:
        out = self.close() if self.engine is not None else []
        self.engine = AnalyzerEngine(msg.montage, self.settings, source=self.source)
        self.session_id = msg.session_id
        return out

    def dispatch(self, msg: Message) -> list[Output]:
        if isinstance(msg, SessionStart):
            if msg.session_id == self.session_id:
                return []
            return self.start(msg)
        e = self.engine
        if e is None or msg.session_id != self.session_id:
            return []
        if isinstance(msg, EmgFrame):
            return e.on_frame(msg.first_sample_index, msg.samples, msg.sampling_rate_hz)
        if isinstance(msg, Stimulus):
            return e.on_stimulus(msg.stimulus_index, msg.sample_index, msg.stim_time_s, msg.direction,
                                 msg.intensity_ma, msg.width_ms)
        if isinstance(msg, StageMarker):
            return e.on_stage(msg.stage, msg.sample_index)
        if isinstance(msg, SessionEnd):
            return self.close()
        return []

    def close(self) -> list[Output]:
        if self.engine is None:
            return []
        out = self.engine.on_end()
        self.engine = None
        self.session_id = None
        return out
