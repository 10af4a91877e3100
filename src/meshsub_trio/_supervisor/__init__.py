"""``serve --workers N``: N processes on one port, one server through NATS.

The supervisor (:mod:`._run`) binds the shared ``SO_REUSEPORT`` sockets
(:mod:`._sockets`), starts the embedded nats-server when no broker is given
(:mod:`._embedded_nats`; :mod:`._nats_watch` kills it if it hangs, so that it
restarts) and keeps one worker per slot alive (:mod:`._worker`: restarted
if it exits, or if its event loop stops beating, :mod:`._heartbeat`);
a worker is the ordinary server, told its role by :mod:`._child`.
"""

from ._child import SUPERVISOR, WorkerRole, end_with_parent, tag_log_lines, worker_role
from ._plan import Plan, plan_for
from ._run import run_supervisor

__all__ = [
    "SUPERVISOR",
    "Plan",
    "WorkerRole",
    "end_with_parent",
    "plan_for",
    "run_supervisor",
    "tag_log_lines",
    "worker_role",
]
