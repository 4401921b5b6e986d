"""The trading state machine as an explicit transition table (ARCHITECTURE §4.2).

The strategy decides *when* a trigger fires; this table alone decides *where* it leads. A pair
that is not in the table is a bug and raises :class:`IllegalTransitionError`.
"""

from __future__ import annotations

from enum import StrEnum

from worker.core.model import Phase

FLAT = Phase.FLAT
ENTRY = Phase.ENTRY_WORKING
RACE = Phase.RACE_EXIT
CARRY = Phase.CARRY_HEDGED
UNWIND = Phase.UNWINDING
HALTED = Phase.HALTED


class Trigger(StrEnum):
    ENTRY_SIGNAL = "entry_signal"
    ENTRY_ABANDONED = "entry_abandoned"
    ENTRY_FILLED = "entry_filled"
    HEDGED = "hedged"
    SPOT_UNWOUND = "spot_unwound"
    EXIT_SIGNAL = "exit_signal"
    EMERGENCY = "emergency"
    UNWOUND = "unwound"
    FLATTEN = "flatten"
    HALT = "halt"
    RESUME_FLAT = "resume_flat"
    RESUME_HEDGED = "resume_hedged"
    RESUME_UNHEDGED = "resume_unhedged"
    CLEAR = "clear"


class IllegalTransitionError(RuntimeError):
    def __init__(self, phase: Phase, trigger: Trigger) -> None:
        super().__init__(f"no transition from {phase} on {trigger}")
        self.phase = phase
        self.trigger = trigger


T = Trigger
TRANSITIONS: dict[tuple[Phase, Trigger], Phase] = {
    (FLAT, T.ENTRY_SIGNAL): ENTRY,
    # the basis fell back, a stop or a block came before any tradeable fill
    (ENTRY, T.ENTRY_ABANDONED): FLAT,
    # the entry ended (complete, or cancelled after a partial fill): exit what was filled
    (ENTRY, T.ENTRY_FILLED): RACE,
    (RACE, T.HEDGED): CARRY,
    # the spot exit won the race: the fill was given back
    (RACE, T.SPOT_UNWOUND): FLAT,
    (CARRY, T.EXIT_SIGNAL): UNWIND,
    (CARRY, T.EMERGENCY): UNWIND,
    (UNWIND, T.UNWOUND): FLAT,
    # an operator flatten cancels whatever works, then market-unwinds what is held
    (ENTRY, T.FLATTEN): UNWIND,
    (RACE, T.FLATTEN): UNWIND,
    (CARRY, T.FLATTEN): UNWIND,
    (HALTED, T.FLATTEN): UNWIND,
    # any critical failure; a halted instance sends nothing more of its own accord
    (FLAT, T.HALT): HALTED,
    (ENTRY, T.HALT): HALTED,
    (RACE, T.HALT): HALTED,
    (CARRY, T.HALT): HALTED,
    (UNWIND, T.HALT): HALTED,
    # only an operator leaves halted; the positions decide where to
    (HALTED, T.RESUME_FLAT): FLAT,
    (HALTED, T.RESUME_HEDGED): CARRY,
    (HALTED, T.RESUME_UNHEDGED): RACE,
    (HALTED, T.CLEAR): FLAT,
    # a clear when already flat only starts a new id epoch
    (FLAT, T.CLEAR): FLAT,
}


def next_phase(phase: Phase, trigger: Trigger) -> Phase:
    try:
        return TRANSITIONS[(phase, trigger)]
    except KeyError:
        raise IllegalTransitionError(phase, trigger) from None
