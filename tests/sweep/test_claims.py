"""Claims are atomic on SQLite: processes racing over one queue never claim a trial twice.

Plain Optuna 5 on SQLite does (its read of the state runs outside the write transaction);
smto.sweep.storage makes every SQLite transaction BEGIN IMMEDIATE."""

from __future__ import annotations

import multiprocessing

import optuna
from sweep_helpers import claim_all

from smto.sweep.storage import open_storage

TRIALS = 120
PROCESSES = 4


def test_racing_processes_claim_each_waiting_trial_exactly_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    storage = open_storage(url)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "race")
    for i in range(TRIALS):
        template = optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, user_attrs={"slot": f"slot{i}"}
        )
        storage.create_new_trial(study_id, template_trial=template)
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        claims = pool.starmap(claim_all, [(url, study_id)] * PROCESSES, chunksize=1)
    numbers = [n for claimed in claims for n in claimed]
    assert sorted(numbers) == list(range(TRIALS))  # each once, none twice
    assert sum(1 for claimed in claims if claimed) >= 2  # they did race
