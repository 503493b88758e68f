"""The epochs of a fit: online epochs, then batch epochs with restarts, on a set of rows.

A fit runs one or two *phases* (a warm-up on the initialisation subsample, then all rows),
each a :class:`Phase`: online epochs (Mairal's algorithm 1 with mini-batches), then batch
epochs (an exact coding pass, then block coordinate descent, stepped by
:class:`Stepper`: searched quasi-Newton or conjugate steps, Anderson mixing or plain)
until the relative change of the objective is below ``tol``.
:class:`Epochs` holds what the phases of one fit share: the learner's parameters, the
convergence log and the re-tunings of alpha.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from bids_app.atoms import settings
from bids_app.atoms.anderson import Anderson
from bids_app.atoms.lasso import Solver, lasso_cost, tune_alpha
from bids_app.atoms.restarts import coactive_pairs, split_pair, top_directions, wasted_atoms
from bids_app.atoms.rows import Rows
from bids_app.atoms.steps import (
    ConjugateDirections,
    QuasiNewtonDirections,
    search_length,
    search_rows,
)
from bids_app.atoms.update import Statistics, bcd

LOGGER = logging.getLogger("llmfbn")


def _converged(accepted, tol: float, window: int) -> bool:
    """Whether the objective of the accepted epochs ``accepted`` ((objective, alpha),
    oldest first) fell by at most ``window * tol`` (relative) over the last ``window``
    accepted epochs, at one alpha. Anderson and searched steps gain unevenly from one
    epoch to the next (a long step, then a short one), so a window of 2 or 4 keeps one
    small gain from stopping the fit."""
    if len(accepted) <= window:
        return False
    (first, alpha), (last, last_alpha) = accepted[-1 - window], accepted[-1]
    return alpha == last_alpha and abs(first - last) <= window * tol * abs(first)


class Epochs:
    """The epochs of one fit, over its phases.

    Parameters
    ----------
    learner : DictionaryLearner, whose parameters (``n_atoms``, ``batch_size``,
        ``max_epochs``, ``tol``, ``random_state``, ``target_sparsity``) the epochs follow.
    tune_x : tensor (n_tune, n_trs), float32, the rows alpha is tuned on.

    Attributes
    ----------
    history : list of dict, one entry per epoch (the learner's ``history_``).
    converged : bool, whether the last phase's batch epochs reached ``tol``.
    """

    def __init__(self, learner, tune_x: torch.Tensor):
        self.learner = learner
        self.tune_x = tune_x
        self.tuning = learner.target_sparsity is not None
        self.history = []
        self.retunes = 0 if self.tuning else settings.MAX_RETUNES
        self.converged = False
        self.tol = settings.STOP_TOL if learner.tol is None else learner.tol

    def run(self, data: Rows, atoms, alpha, rng, online_epochs: int, name: str):
        """Online then batch epochs on ``data`` from ``atoms`` (n_atoms, n_trs) float32.

        ``name`` prefixes the phase of the log entries ("" or "subsample ").
        Returns (atoms, alpha, store): the atoms, the penalty and the codes (n, n_atoms)
        of the last batch epoch.
        """
        return Phase(self, data, atoms.device, name).run(atoms, alpha, rng, online_epochs)

    def converged_by(self, accepted) -> bool:
        """Whether the accepted epochs ((objective, alpha), oldest first) meet the stopping
        rule: a mean relative change below ``tol`` per epoch over ``settings.STOP_WINDOW``
        epochs, or below min(tol, ``settings.SETTLED_TOL``) over ``SETTLED_WINDOW``."""
        tol = self.tol
        return _converged(accepted, tol, settings.STOP_WINDOW) or bool(
            settings.SETTLED_WINDOW
            and _converged(accepted, min(tol, settings.SETTLED_TOL), settings.SETTLED_WINDOW))

    def tune(self, atoms, alpha: float) -> float:
        """The alpha giving ``target_sparsity`` with ``atoms``, searched from ``alpha``."""
        return tune_alpha(Solver.of(atoms), self.tune_x, alpha, self.learner.target_sparsity)

    def retune(self, atoms, alpha: float) -> float:
        """After a batch epoch: alpha re-tuned, until it moves by less than 2 %."""
        if self.tuning and self.retunes < settings.MAX_RETUNES:
            new_alpha = self.tune(atoms, alpha)
            self.retunes += 1
            if abs(new_alpha - alpha) <= 0.02 * alpha:
                self.retunes = settings.MAX_RETUNES     # settled: keep alpha fixed from now on
            else:
                alpha = new_alpha
        return alpha

    def log(self, phase, total, alpha, mean_nonzero, coding_iter, n_rows):
        """Append an epoch's entry to ``history`` and log it."""
        self.history.append(dict(epoch=len(self.history) + 1, phase=phase,
                                 objective=total, alpha=alpha, mean_nonzero=mean_nonzero,
                                 coding_iter=coding_iter, n_rows=n_rows))
        LOGGER.info("epoch %d (%s, %d rows): objective %.6g, %.2f non-zeros per row, "
                    "%d FISTA iterations", len(self.history), phase, n_rows, total,
                    mean_nonzero, coding_iter)


class Phase:
    """Online then batch epochs on one set of rows.

    Parameters
    ----------
    epochs : Epochs, of the fit.
    data : Rows, n rows of n_trs values.
    device : torch.device, where the atoms and statistics live.
    name : str, prefix of the phase in the log ("" or "subsample ").

    Attributes
    ----------
    store : tensor (n, n_atoms), float32, every row's latest codes (warm starts); on
        ``device`` when ``data`` is resident, else in host memory.
    stats : Statistics of the codes.
    """

    def __init__(self, epochs: Epochs, data: Rows, device, name: str):
        self.epochs = epochs
        self.learner = epochs.learner
        self.data = data
        self.device = device
        self.name = name
        k = self.learner.n_atoms
        self.store = torch.zeros((data.n, k), dtype=torch.float32,
                                 device=device if data.data is not None else "cpu")
        self.stats = Statistics.zeros(k, data.n_trs, device)
        self.probe = None                # rows whose residuals re-initialise atoms

    def run(self, atoms, alpha, rng, online_epochs: int):
        """(atoms, alpha, store) after the phase's epochs."""
        epochs = self.epochs
        atoms, epoch = self._online_epochs(atoms, alpha, rng, online_epochs)
        if epochs.tuning and online_epochs and epochs.retunes < settings.MAX_RETUNES:
            alpha = epochs.tune(atoms, alpha)
        atoms, alpha = self._batch_epochs(atoms, alpha, epoch)
        return atoms, alpha, self.store

    # ------------------------------------------------------------------ online epochs
    def _online_epochs(self, atoms, alpha, rng, online_epochs: int):
        """Mairal 2010, algorithm 1 with mini-batches: (atoms, epochs run)."""
        data = self.data
        n = data.n
        step = 0
        bsize = int(min(self.learner.batch_size, n))
        n_epochs = min(online_epochs, self.learner.max_epochs)
        for _ in range(n_epochs):
            total, nnz, max_it = 0.0, 0, 0
            chunk_list = data.chunks()
            for ci in rng.permutation(len(chunk_list)):
                start, stop = chunk_list[ci]
                x_chunk = data.get(start, stop)
                order = rng.permutation(stop - start)
                for b0 in range(0, stop - start, bsize):
                    local = np.sort(order[b0:b0 + bsize])
                    xb = x_chunk[torch.as_tensor(local, device=self.device)]
                    atoms, cost, nonzero, it = self._online_step(xb, local + start, atoms,
                                                                 alpha, step)
                    total += cost
                    nnz += nonzero
                    max_it = max(max_it, it)
                    step += 1
            self.epochs.log(self.name + "online", total, alpha, nnz / n, max_it, n)
        return atoms, n_epochs

    def _online_step(self, xb, rows, atoms, alpha, step: int):
        """One mini-batch ``xb`` (m, n_trs), rows ``rows`` of the phase: code it, update the
        statistics, then one pass of block coordinate descent; an unused atom restarts
        from the worst-coded row of the mini-batch.

        Returns (atoms, objective of the mini-batch, non-zero codes, FISTA iterations).
        """
        store = self.store
        solver = Solver.of(atoms)
        init = store[torch.as_tensor(rows, device=store.device)]
        codes, resid_sq, it = solver.code(xb, alpha, init=init.to(self.device),
                                          gap_tol=settings.GAP_TOL_ONLINE,
                                          max_iter=settings.MAX_ITER_ONLINE)
        store[torch.as_tensor(rows, device=store.device)] = codes.to(store.device)
        cost = lasso_cost(codes, resid_sq, alpha)
        nonzero = int((codes != 0).sum())
        m = xb.shape[0]
        self.stats.forget_and_add(codes, xb, step)
        atoms64 = atoms.double()
        unused = bcd(atoms64, self.stats.a, self.stats.b, passes=1)
        if len(unused) and step > 0:
            worst = torch.argsort(resid_sq, descending=True, stable=True)
            for j, u in enumerate(unused[:m]):
                row = xb[worst[j]].double()
                atoms64[u] = row / row.norm().clamp_min(1e-30)
        return atoms64.float(), cost, nonzero, it

    # ------------------------------------------------------------------ batch epochs
    def _batch_epochs(self, atoms, alpha, epoch: int):
        """Exact coding pass + exact block coordinate descent, stepped as
        ``settings.STEPS`` says ("plain", "anderson", "conjugate-search" or
        "quasi-newton-search"), until the relative change of the objective (same alpha)
        over ``settings.STOP_WINDOW`` accepted epochs is below that many times ``tol``
        with no atom to restart, or until ``max_epochs`` (``epoch`` epochs ran already).
        A stepped (extrapolated or searched) epoch whose objective rises above the last
        accepted one is rejected (logged with ``accepted: False``): the plain step from
        the last accepted atoms is coded next.
        Returns (atoms, alpha): if a restart did not pay off, the atoms of the best epoch."""
        accepted = []                    # (objective, alpha) of every accepted epoch
        self.epochs.converged = False
        best = None                      # (objective, alpha, atoms) of the best epoch
        restart_rounds = 0
        stepper = Stepper(self, settings.STEPS)
        stepped, plain_step = False, None
        while epoch < self.learner.max_epochs:
            total, coactive = self._coding_pass(atoms, alpha)
            epoch += 1
            if stepped and accepted[-1][1] == alpha and total > accepted[-1][0]:
                self.epochs.history[-1]["accepted"] = False
                stepper.reset()
                atoms, stepped = plain_step, False
                continue
            if best is None or best[1] != alpha or total < best[0]:
                best = (total, alpha, atoms)
            accepted.append((total, alpha))
            converged = self.epochs.converged_by(accepted)
            atoms64 = atoms.double()
            wasted, pairs = [], []
            if restart_rounds < settings.MAX_RESTART_ROUNDS:
                # an atom that duplicates another or is barely used leaves a pattern
                # unexplained, and two atoms can split two patterns between them (local
                # minima): restart or split them, at most a few times
                wasted = wasted_atoms(atoms64, self.stats.a)
                pairs = coactive_pairs(coactive.cpu().numpy(), skip=wasted)
                restart_rounds += bool(len(wasted) or len(pairs))
            if converged and not len(wasted) and not pairs:
                self.epochs.converged = True
                break
            plain_step, restarted = self._update_atoms(atoms, atoms64, wasted, pairs)
            new_alpha = self.epochs.retune(plain_step, alpha)
            if restarted or new_alpha != alpha:
                stepper.reset()          # another problem from here: no extrapolation
                atoms, stepped = plain_step, False
            else:
                atoms, stepped = stepper.step(atoms, plain_step, alpha)
            alpha = new_alpha
        if best is not None and best[1] == alpha and best[0] < total:
            atoms = best[2]       # a re-initialisation did not pay off: keep the best atoms
        return atoms, alpha

    def _coding_pass(self, atoms, alpha):
        """Code every row against ``atoms`` (warm-started from ``store``), accumulate the
        exact statistics and log the epoch.

        Returns (objective of the epoch, coactive): coactive (n_atoms, n_atoms), float64,
        counts the rows whose codes use both atoms."""
        data, store, device = self.data, self.store, self.device
        k = self.learner.n_atoms
        solver = Solver.of(atoms)
        self.stats.reset()
        coactive = torch.zeros((k, k), dtype=torch.float64, device=device)
        total, nnz, max_it = 0.0, 0, 0
        for start, stop in data.chunks():
            x_chunk = data.get(start, stop)
            init = store[start:stop].to(device)
            codes, resid_sq, it = solver.code(x_chunk, alpha, init=init)
            store[start:stop] = codes.to(store.device)
            total += lasso_cost(codes, resid_sq, alpha)
            nnz += int((codes != 0).sum())
            max_it = max(max_it, it)
            self.stats.add(codes, x_chunk)
            active = (codes != 0).double()
            coactive += active.T @ active
        self.epochs.log(self.name + "batch", total, alpha, nnz / data.n, max_it, data.n)
        return total, coactive

    def _update_atoms(self, atoms, atoms64, wasted, pairs):
        """Block coordinate descent, then the split of the rotated ``pairs`` and the restart
        of the unused and ``wasted`` atoms (their number logged as the epoch's
        ``restarted``). Returns (the new atoms, float32; the number restarted or split)."""
        unused = bcd(atoms64, self.stats.a, self.stats.b, passes=settings.BCD_PASSES)
        for i, j in pairs:
            store = self.store
            both = torch.nonzero((store[:, i] != 0) & (store[:, j] != 0)).squeeze(1)
            codes_ij = store[both][:, [i, j]].to(self.device).double()
            split = split_pair(atoms[i].double(), atoms[j].double(), codes_ij)
            if split is not None:
                atoms64[i], atoms64[j] = split
        if pairs:
            LOGGER.info("split %d pairs of atoms that code the same ANs", len(pairs))
        wasted = np.setdiff1d(wasted, unused)
        replace = np.union1d(unused, wasted).astype(np.int64)
        restarted = int(len(replace) + 2 * len(pairs))
        if restarted:
            # the next epoch may cost more: say so in the log
            self.epochs.history[-1]["restarted"] = restarted
        if len(replace):
            self._restart(atoms, atoms64, replace)
            LOGGER.info("re-initialised %d unused and %d duplicate or rarely used "
                        "atoms from the principal directions of the residuals",
                        len(unused), len(replace) - len(unused))
        return atoms64.float(), restarted

    def _restart(self, atoms, atoms64, replace):
        """Restart the atoms ``replace`` (in ``atoms64``) from what ``atoms`` leave
        unexplained: the leading principal directions of the coding residuals of a seeded
        subset of rows (a pattern missing from the atoms dominates them)."""
        n, store = self.data.n, self.store
        if self.probe is None:
            probe_rng = np.random.default_rng([int(self.learner.random_state), 1])
            self.probe = np.sort(probe_rng.choice(n, min(n, settings.N_PROBE), replace=False))
        index = torch.as_tensor(self.probe, device=store.device)
        resid = (self.data.take(self.probe) - store[index].to(self.device) @ atoms).double()
        directions = top_directions(resid, len(replace))
        for u, row in zip(replace, directions):
            atoms64[u] = row / row.norm().clamp_min(1e-30)
        if self.epochs.tuning:
            self.epochs.retunes = 0          # the codes' sparsity moves with the atoms


class Stepper:
    """The next atoms of a batch epoch from its plain step, by ``settings.STEPS``:

    - "plain": the plain step (v3);
    - "anderson": Anderson mixing of the last ``settings.ANDERSON_MEMORY`` + 1 steps
      (:mod:`bids_app.atoms.anderson`, v4);
    - "conjugate-search": a conjugate direction and a step length searched on a subsample
      (:mod:`bids_app.atoms.steps`, v5);
    - "quasi-newton-search": an L-BFGS direction and a step length searched on a
      subsample (:mod:`bids_app.atoms.steps`, v6).
    """

    def __init__(self, phase: Phase, steps: str):
        memories = {"plain": lambda: None,
                    "anderson": lambda: Anderson(settings.ANDERSON_MEMORY),
                    "conjugate-search": ConjugateDirections,
                    "quasi-newton-search": lambda: QuasiNewtonDirections(settings.LBFGS_MEMORY)}
        if steps not in memories:
            raise ValueError(f"unknown settings.STEPS {steps!r}")
        self.phase = phase
        self.steps = steps
        self.memory = memories[steps]()     # what the steps remember of the last epochs
        self.rng = np.random.default_rng([int(phase.learner.random_state), 2])

    def reset(self):
        """Forget the history (after a restart, a rejected step or a new alpha)."""
        if self.memory is not None:
            self.memory.reset()

    def step(self, atoms, plain_step, alpha):
        """(next atoms float32, whether they are other than the plain step)."""
        if self.steps == "plain":
            return plain_step, False
        if self.steps == "anderson":
            mixed, extrapolated = self.memory.step(atoms, plain_step)
            return mixed.float(), extrapolated
        phase = self.phase
        atoms64 = atoms.double()
        direction = self.memory.direction(atoms64, plain_step.double())
        rows = search_rows(phase.data.n, self.rng)
        index = torch.as_tensor(rows, device=phase.store.device)
        x = phase.data.take(rows)
        init = phase.store[index].to(phase.device)
        length, searched, coded = search_length(x, init, atoms64, direction, alpha)
        phase.epochs.history[-1].update(step_length=length, searched_rows=int(coded))
        if length == 1 and not self.memory.turned:
            return plain_step, False     # the plain step itself: nothing to guard
        return searched, True
