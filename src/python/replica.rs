//! `Replica`: follows a primary into a local, read-only store; promotes it at run time.

use crate::python::display::quoted;
use std::fmt::Write;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyTuple};

use super::args::{directory, int, non_negative, opt_int, seconds, timeout as wait_limit};
use super::display::html;
use super::diverged::{account, diverged_error};
use super::errors::{not_inherited, owned, raise, run_detached};
use super::primary::{PyPrimary, PyPromotion};
use super::replication::wait_until;
use super::settings::Overrides;
use super::status::PyReplicaStatus;
use super::store::PyStore;
use crate::fork::ParentOnly;
use crate::replication::replica::{OnDiverge, Replica, ReplicaOptions};
use crate::replication::status::LinkState;
use crate::store::StoreOptions;

/// How often `wait_for(progress=...)` reports: a few times a second.
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// Follows a primary into a local store that readers can use while it applies.
///
/// It reconnects by itself after any failure and resumes from its own log.
///
/// Args:
///     token: the primary's shared token.
///     name: its slot on the primary (default: the directory's name).
///     fsync: fdatasync what it applies; only replicas that fsync count toward a sync
///         write's quorum.
///     max_backoff: the longest wait, in seconds, between attempts to reach the
///         primary (2.0 by default, at least 0.01): waits start at 0.05 s and double up
///         to it, drawn at random between half a wait and a whole one.
#[pyclass(frozen, module = "replikv._core", name = "Replica")]
pub(crate) struct PyReplica {
    replica: ParentOnly<Replica>,
    store: Py<PyStore>,
    /// The ``Primary`` a planned switchover made of this replica (serving on its
    /// ``listen`` address with the old primary's settings), or ``None``. Once asked for,
    /// it is the caller's; before that, closing the replica closes it too.
    promoted: std::sync::Mutex<Option<Py<PyPrimary>>>,
}

/// A replica's name by default: its directory's, if that is a valid name.
pub(super) fn default_name(path: &std::path::Path) -> PyResult<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| crate::store::validate_table_name(n).is_ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            PyValueError::new_err("give the replica a name= (letters, digits, '_', '.', '-')")
        })
}

impl PyReplica {
    /// The replica's store, for readers in Rust (a cache reading through it).
    pub(super) fn store_handle(&self) -> crate::store::Store {
        self.replica.store().clone()
    }

    /// Wraps a running replica whose store is `store`.
    pub(super) fn attached(replica: ParentOnly<Replica>, store: Py<PyStore>) -> Self {
        Self {
            replica,
            store,
            promoted: std::sync::Mutex::new(None),
        }
    }
}

#[pymethods]
impl PyReplica {
    #[new]
    #[pyo3(signature = (path, *, primary, token = None, name = None, fsync = true, max_backoff = 2.0, on_diverge = "stop", listen = None))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of the Python API
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        primary: String,
        token: Option<String>,
        name: Option<String>,
        fsync: bool,
        max_backoff: f64,
        on_diverge: &str,
        listen: Option<String>,
    ) -> PyResult<Self> {
        let path = directory(path)?;
        let on_diverge = match on_diverge {
            "stop" => OnDiverge::Stop,
            "resync" => OnDiverge::Resync,
            other => {
                return Err(PyValueError::new_err(format!(
                    "on_diverge must be 'stop' or 'resync', not {}",
                    quoted(other)
                )))
            }
        };
        let name = match name {
            Some(name) => name,
            None => default_name(&path)?,
        };
        crate::store::validate_table_name(&name).map_err(|_| {
            PyValueError::new_err(format!(
                "invalid replica name {}: use letters, digits, '_', '.', '-'",
                quoted(&name)
            ))
        })?;
        let options = ReplicaOptions {
            primary,
            token,
            name,
            max_backoff: seconds("max_backoff", max_backoff)?.max(Duration::from_millis(10)),
            store: StoreOptions {
                fsync,
                ..StoreOptions::default()
            },
            on_diverge,
            listen,
        };
        let replica = run_detached(py, move || Replica::start(path, options))?;
        let store = Py::new(py, PyStore::of(replica.store().clone()))?;
        Ok(Self::attached(ParentOnly::new(replica), store))
    }

    /// The replica's store: readable while it applies; writes raise `ReadOnlyError`.
    #[getter]
    fn store(&self, py: Python<'_>) -> Py<PyStore> {
        self.store.clone_ref(py)
    }

    /// Its name: its slot on the primary (defaults to the directory's name).
    #[getter]
    fn name(&self) -> String {
        self.replica.name().to_owned()
    }

    /// The last LSN applied here (what reads see). The replica's own fdatasync of it may
    /// follow a moment later (it is durable on the primary), and entries its primary
    /// shipped before its own fdatasync ended show once it says they are durable there
    /// (``status().flushed_lsn`` is what is durable here).
    #[getter]
    fn applied_lsn(&self, py: Python<'_>) -> PyResult<u64> {
        owned(py, self.replica.store())?;
        Ok(self.replica.store().readable_lsn())
    }

    /// Waits until ``lsn`` is applied here; returns whether it was in time.
    ///
    /// ``timeout`` is in seconds; ``float("inf")`` waits for ever. ``progress=True`` shows
    /// the seeding (snapshot rows received of the snapshot's rows) and then the catch-up
    /// (log entries applied of those up to ``lsn``) as progress bars (a widget in Jupyter,
    /// one line each in a terminal); a callable is called a few times a second with
    /// ``(stage, done, total)``, ``stage`` being ``"snapshot"`` or ``"catch-up"``; a wait
    /// that reaches ``lsn`` ends on a call with ``done == total``.
    ///
    /// An LSN applied here counts only once the primary it follows has compared this
    /// directory's history with its own (the first handshake since it started, or since
    /// ``follow()`` re-pointed it): a directory that served as a primary, or followed
    /// another one, may hold other entries under the same LSNs. Until then it waits, even
    /// for an LSN it holds; a fork found then raises (below).
    ///
    /// A primary that cannot be reached is retried, not raised: the wait then returns
    /// ``False``, and ``status().last_error`` says why (``connection refused``, ...).
    ///
    /// Raises:
    ///     DivergedError: this replica stopped on a fork (``on_diverge="stop"``): at once,
    ///         whatever ``lsn``, even one applied here, since its store holds entries its
    ///         primary does not.
    ///     ReplicationError: the link failed for good (a wrong token, say): the primary's
    ///         reason, rather than a wait for nothing.
    ///     StoreClosed: the replica is closed, or was closed while it waited.
    #[pyo3(signature = (lsn, timeout = 5.0, progress = None))]
    fn wait_for(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = int)] lsn: i128,
        timeout: f64,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let lsn = non_negative("lsn", lsn)?;
        let timeout = wait_limit("timeout", timeout)?;
        let Some(progress) = progress.filter(|p| !p.is_none()) else {
            return self.wait_applied(py, lsn, timeout);
        };
        if !progress.is_instance_of::<PyBool>() {
            return self.wait_reporting(py, lsn, timeout, progress);
        }
        if !progress.is_truthy()? {
            return self.wait_applied(py, lsn, timeout);
        }
        let description = format!("replica {}", self.replica.name());
        let bars = py
            .import("replikv._progress")?
            .getattr("StagedProgress")?
            .call1((description,))?;
        let waited = self.wait_reporting(py, lsn, timeout, &bars);
        bars.call_method0("close")?;
        waited
    }

    /// Reads ``key`` once ``min_lsn`` is applied (read-your-writes).
    ///
    /// Raises:
    ///     ReplicationTimeout: ``min_lsn`` was not applied within ``timeout`` (the message
    ///         says what the link last failed on, if anything).
    ///     DivergedError: this replica stopped on a fork: its store holds entries its
    ///         primary does not, so no read of it is the primary's (``replica.store.get``
    ///         still reads it, as it is).
    ///     ReplicationError: the link failed for good, with the primary's reason.
    ///     StoreClosed: the replica is closed.
    #[pyo3(signature = (table, key, default = None, *, min_lsn = 0, timeout = 1.0))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
        #[pyo3(from_py_with = int)] min_lsn: i128,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let min_lsn = non_negative("min_lsn", min_lsn)?;
        let limit = wait_limit("timeout", timeout)?;
        if !self.wait_applied(py, min_lsn, limit)? {
            let applied = self.replica.store().readable_lsn();
            let state = self.replica.state();
            let mut message = if state.matched {
                format!("the replica has applied LSN {applied}, not {min_lsn}, after {timeout} s")
            } else {
                format!(
                    "the replica's primary has not checked its history yet, after {timeout} s: \
                     none of its LSNs counts as the primary's (it holds {applied})"
                )
            };
            if let Some(error) = state.last_error {
                let _ = write!(message, " (its link is {}: {error})", state.state.name());
            }
            return Err(raise(py, "ReplicationTimeout", (message, min_lsn)));
        }
        self.store.bind(py).get().get(py, table, key, default)
    }

    /// The link's state, position and lag, and what it did about a fork.
    fn status(&self, py: Python<'_>) -> PyResult<PyReplicaStatus> {
        owned(py, self.replica.store())?;
        let state = self.replica.state();
        let flushed = self.replica.store().synced_lsn();
        let applied = self.replica.store().readable_lsn();
        let lag_lsn = state.primary_last_lsn.saturating_sub(applied);
        let lag = state.lag_seconds(applied);
        let last_resync = match &state.last_resync {
            Some(resynced) => {
                let last = account(py, &resynced.divergence)?;
                last.set_item(
                    "report",
                    resynced
                        .report
                        .as_ref()
                        .map(|path| path.display().to_string()),
                )?;
                Some(last.unbind())
            }
            None => None,
        };
        Ok(PyReplicaStatus {
            name: self.replica.name().to_owned(),
            // Once promoted, the primary is its own store, where it serves.
            primary: state
                .serving_at
                .clone()
                .unwrap_or_else(|| self.replica.primary()),
            state: state.state.name(),
            // A follower applies each batch before its fdatasync (applied may be ahead), and
            // holds back what its primary shipped before its own (applied may be behind).
            applied_lsn: applied,
            flushed_lsn: flushed,
            primary_last_lsn: state.primary_last_lsn,
            lag_lsn,
            lag_seconds: lag,
            epoch: state.primary_epoch,
            primary_quorum: state.primary_quorum,
            primary_members: state.primary_members,
            primary_peers: state.primary_peers,
            connections: state.connections,
            snapshots: state.snapshots,
            snapshot_progress: state.snapshot,
            last_error: state.last_error,
            diverged: state
                .diverged
                .as_ref()
                .map(|divergence| account(py, divergence).map(Bound::unbind))
                .transpose()?,
            resyncs: state.resyncs,
            last_resync,
        })
    }

    #[pyo3(signature = (*, listen = None, token = None, force = false,
        ship_interval = None, quorum = None, sync_timeout = None, on_timeout = None,
        table_modes = None, default_durability = None, ship_ahead = None))]
    /// Makes this replica the primary of a new epoch, without reopening its store;
    /// returns the new :class:`Primary` (see its ``promotion``).
    ///
    /// It asks the members its primary's heartbeats named (replicas started with
    /// ``listen=``) to raise their epoch. A sync write is acknowledged once ``quorum`` of
    /// the primary's ``members`` replicas hold it, so any ``members - quorum + 1`` of them
    /// hold every acknowledged write; a promotion also needs a majority of the members,
    /// so that no two promotions win one epoch (the README's "Failover: promotion"). Once
    /// the larger number of those that fsync granted it (itself included), it adopts the
    /// newest log among them (fetching what it lacks) and serves it on ``listen``
    /// (default: its own ``listen`` address, else a free port) with ``token`` (default:
    /// its own). The members that granted then follow it, and the old primary is told it
    /// is deposed.
    ///
    /// It serves with the old primary's settings as its heartbeats last said (kept in
    /// this replica's directory): ``quorum``, ``table_modes``, ``default_durability``,
    /// ``sync_timeout``, ``on_timeout``, ``ship_interval``, ``ship_ahead``, the heartbeat
    /// interval, batch size and log caps, so that a table written synchronously stays so.
    /// Each argument given replaces its setting (``table_modes={}`` clears the table
    /// modes); with no heartbeat heard, ``Primary``'s defaults. ``Primary.settings`` shows
    /// what it serves with. The old primary's quorum may need more replicas than are left
    /// without it: sync writes are then refused until one joins, or pass ``quorum=``.
    ///
    /// Raises ``ReplicationError`` when too few members can be reached (nothing changes
    /// when that is known before asking), when another promotion got a member first,
    /// when a member that granted recorded a membership this replica never heard of and
    /// too few of its members granted (promote that member instead), or when a member
    /// holds a newer log that forked from this one; ``force=True``
    /// promotes with whoever granted and reports the possible loss. It also raises it,
    /// before anything changes, when the settings kept on disk are damaged and no heartbeat
    /// told them again, unless ``quorum``, ``table_modes`` and ``default_durability`` are
    /// all given: it never serves weaker than the old primary did. The store then
    /// belongs to the new primary: closing the replica leaves it open. ``ValueError``: an
    /// argument out of range.
    #[allow(clippy::too_many_arguments)] // the keyword arguments of the Python API
    fn promote(
        &self,
        py: Python<'_>,
        listen: Option<String>,
        token: Option<String>,
        force: bool,
        ship_interval: Option<f64>,
        #[pyo3(from_py_with = opt_int)] quorum: Option<i128>,
        sync_timeout: Option<f64>,
        on_timeout: Option<String>,
        table_modes: Option<std::collections::HashMap<String, String>>,
        default_durability: Option<String>,
        ship_ahead: Option<bool>,
    ) -> PyResult<PyPrimary> {
        let listen = listen.unwrap_or_else(|| {
            self.replica
                .listen_address()
                .map_or_else(|| "127.0.0.1:0".to_owned(), |address| address.to_string())
        });
        let token = token.or_else(|| self.replica.token().map(str::to_owned));
        owned(py, self.replica.store())?;
        let options = Overrides {
            ship_interval,
            quorum,
            sync_timeout,
            on_timeout,
            table_modes,
            default_durability,
            ship_ahead,
        }
        .options(py, &listen, token, self.replica.state().primary_settings)?;
        let replica = &self.replica;
        let (primary, promotion) = run_detached(py, move || replica.promote(options, force))?;
        Ok(PyPrimary {
            primary: ParentOnly::new(primary),
            store: self.store.clone_ref(py),
            promotion: Some(Py::new(py, PyPromotion::from(promotion))?),
        })
    }

    /// The ``Primary`` a planned switchover made of this replica (serving on its
    /// ``listen`` address with the old primary's settings), or ``None``. Once asked for,
    /// it is the caller's; before that, closing the replica closes it too.
    #[getter]
    fn promoted(&self, py: Python<'_>) -> PyResult<Option<Py<PyPrimary>>> {
        let mut promoted = self
            .promoted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if promoted.is_none() {
            if let Some(primary) = self.replica.take_handed_over() {
                let primary = PyPrimary {
                    primary: ParentOnly::new(primary),
                    store: self.store.clone_ref(py),
                    promotion: None,
                };
                *promoted = Some(Py::new(py, primary)?);
            }
        }
        Ok(promoted.as_ref().map(|p| p.clone_ref(py)))
    }

    /// Where it answers other members (and serves once promoted), if it listens.
    #[getter]
    fn listen_address(&self) -> Option<String> {
        self.replica
            .listen_address()
            .map(|address| address.to_string())
    }

    /// Follows the primary at ``address`` from now on (after a promotion elsewhere),
    /// continuing from its own position when its history matches the new primary's; a
    /// fork is handled as ``on_diverge`` says. Raises ``ReplicationError`` once this
    /// replica was itself promoted.
    fn follow(&self, py: Python<'_>, address: &str) -> PyResult<()> {
        owned(py, self.replica.store())?;
        run_detached(py, || self.replica.follow(address))
    }

    /// Stops following and closes the store (unless it was promoted).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        not_inherited(py, self.replica.store())?;
        run_detached(py, || self.replica.close())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        html(slf.as_any())
    }

    fn __repr__(&self) -> String {
        if let Err(err) = self.replica.store().check_process() {
            return format!("<Replica {}: {err}>", quoted(self.replica.name()));
        }
        let state = self.replica.state();
        format!(
            "<Replica {} of {} state={} applied_lsn={}>",
            quoted(self.replica.name()),
            self.replica.primary(),
            state.state.name(),
            self.replica.store().readable_lsn()
        )
    }
}

impl PyReplica {
    /// Waits until `lsn` is applied here (or `timeout`); a link that failed for good
    /// raises its reason instead of letting the caller wait for nothing.
    /// As `wait_applied`, calling `report(stage, done, total)` every `REPORT_EVERY`: the
    /// replica applies on its own threads meanwhile, and never waits for the GIL.
    fn wait_reporting(
        &self,
        py: Python<'_>,
        lsn: u64,
        timeout: Option<Duration>,
        report: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut catch_up_from = Some(self.replica.store().readable_lsn());
        loop {
            let slice = deadline.map_or(REPORT_EVERY, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(REPORT_EVERY)
            });
            let reached = self.wait_applied(py, lsn, Some(slice))?;
            let (stage, done, total) = if let Some((received, rows)) = self.replica.state().snapshot
            {
                catch_up_from = None;
                // The snapshot's rows are visible before the link counts it as installed:
                // a wait it completes ends on a full bar.
                ("snapshot", if reached { rows } else { received }, rows)
            } else {
                let applied = self.replica.store().readable_lsn();
                let from = *catch_up_from.get_or_insert(applied);
                (
                    "catch-up",
                    applied.saturating_sub(from),
                    lsn.saturating_sub(from),
                )
            };
            report.call1((stage, done.min(total), total))?;
            if reached || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(reached);
            }
        }
    }

    fn wait_applied(&self, py: Python<'_>, lsn: u64, timeout: Option<Duration>) -> PyResult<bool> {
        owned(py, self.replica.store())?;
        let store = self.replica.store();
        let replica = &self.replica;
        // A closed replica applies nothing more: the wait ends at once, and a close from
        // another thread ends it too (a promoted replica's store stays open, and waits).
        let closed = || -> PyResult<()> {
            if !store.is_closed() {
                return Ok(());
            }
            let message = format!(
                "replica {} is closed: it will not reach LSN {lsn}",
                quoted(replica.name())
            );
            Err(raise(py, "StoreClosed", (message,)))
        };
        closed()?;
        // A replica that stopped on a fork holds entries its primary does not: none of its
        // LSNs is the primary's any more, whether reached here or not. Nor are they before
        // its primary checked its history (a store that served as a primary, or followed
        // another one, may hold entries this primary lacks under the same LSNs).
        let diverged = || replica.state().diverged.is_some();
        // LSN 0 (nothing) is in every history.
        let holds = |matched: bool| lsn == 0 || (matched && store.readable_lsn() >= lsn);
        let reached = || holds(replica.state().matched);
        if !diverged() {
            wait_until(py, timeout, || {
                store.is_closed() || {
                    // One copy of the state per check: the wait polls every millisecond.
                    let state = replica.state();
                    holds(state.matched)
                        || state.state == LinkState::Failed
                        || state.diverged.is_some()
                }
            })?;
            closed()?;
            if reached() && !diverged() {
                return Ok(true);
            }
        }
        let state = replica.state();
        if let Some(divergence) = &state.diverged {
            // Said once: the link's error (`last_error`) restates the fork twice more.
            let message = format!(
                "replica {} stopped following {}: its history forks from the primary's at \
                 LSN {}: its store holds {}, so no read of it is the primary's. Nothing was \
                 merged: follow again with on_diverge=\"resync\" to keep them in a report \
                 file and re-seed",
                quoted(replica.name()),
                replica.primary(),
                divergence.fork_lsn,
                divergence.summary(),
            );
            return Err(diverged_error(py, message, divergence));
        }
        if state.state == LinkState::Failed {
            let reason = state.last_error.unwrap_or_default();
            let message = format!(
                "replica {} stopped following {} and will not reach LSN {lsn}: {reason}",
                quoted(replica.name()),
                replica.primary()
            );
            return Err(raise(py, "ReplicationError", (message,)));
        }
        Ok(false)
    }
}
