//! Reading through on a miss: where values come from, and singleflight, so that
//! concurrent misses of one key make one load and share its result.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;

use super::super::errors::run_detached;
use super::super::replica::PyReplica;
use super::super::store::PyStore;
use crate::store::Store;

/// What a miss reads.
pub(super) enum Source {
    /// Nothing: a miss returns the default.
    Nothing,
    /// A store (or a replica's store), read with the LSN of the state read.
    Store(Store),
    /// `source(table, key)`, taken to read the newest state.
    Callable(Py<PyAny>),
}

impl Source {
    pub(super) fn from_py(source: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let Some(source) = source else {
            return Ok(Source::Nothing);
        };
        if let Ok(store) = source.cast::<PyStore>() {
            return Ok(Source::Store(store.get().store.clone()));
        }
        if let Ok(replica) = source.cast::<PyReplica>() {
            return Ok(Source::Store(replica.get().store_handle()));
        }
        if source.is_callable() {
            return Ok(Source::Callable(source.clone().unbind()));
        }
        Err(PyTypeError::new_err(format!(
            "source must be a Store, a Replica or a callable (table, key) -> value, not {}",
            source.get_type().name()?
        )))
    }

    /// The store it reads, if it is one.
    pub(super) fn store(&self) -> Option<&Store> {
        match self {
            Source::Store(store) => Some(store),
            _ => None,
        }
    }
}

/// A value loaded from the source: its encoded bytes (`None`: no such key) and the LSN it
/// was read at.
pub(super) struct Loaded {
    pub(super) bytes: Option<Vec<u8>>,
    pub(super) lsn: u64,
}

/// Reads `key` (encoded) of `table` from a store once it has applied `min_lsn` (a lagging
/// replica waits up to `patience`).
pub(super) fn read_store(
    py: Python<'_>,
    store: &Store,
    table: &str,
    key: &[u8],
    min_lsn: u64,
    patience: Duration,
) -> PyResult<Loaded> {
    run_detached(py, || {
        let deadline = Instant::now() + patience;
        while store.readable_lsn() < min_lsn && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (bytes, lsn) = store.get_versioned(table, key, |v| v.map(<[u8]>::to_vec))?;
        Ok(Loaded { bytes, lsn })
    })
}

/// One load in flight and, once done, its result.
struct Flight {
    /// The log position its load had to reach: a caller whose read must see a newer one
    /// never shares this load (it may predate a write the caller must see).
    floor: u64,
    result: Mutex<Option<Result<Option<Py<PyAny>>, PyErr>>>,
    done: Condvar,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Loads in flight, by key.
#[derive(Default)]
pub(super) struct Flights {
    flying: Mutex<HashMap<Vec<u8>, Arc<Flight>>>,
}

/// Lands a flight however its leader ends: a load that unwinds still releases the callers
/// waiting for it, with an error.
struct Landing<'a> {
    flights: &'a Flights,
    key: &'a [u8],
    flight: Arc<Flight>,
}

impl Landing<'_> {
    fn land(&self, result: Result<Option<Py<PyAny>>, PyErr>) {
        let mut flying = lock(&self.flights.flying);
        // A newer load of the key may have taken its place meanwhile.
        if flying
            .get(self.key)
            .is_some_and(|current| Arc::ptr_eq(current, &self.flight))
        {
            flying.remove(self.key);
        }
        drop(flying);
        let mut slot = lock(&self.flight.result);
        if slot.is_none() {
            *slot = Some(result);
        }
        drop(slot);
        self.flight.done.notify_all();
    }
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.land(Err(PyRuntimeError::new_err(
            "the load this call waited for failed without a result",
        )));
    }
}

impl Flights {
    /// Runs `load` for `key`, which must read the log at `floor` or later, unless a load
    /// of it with at least that floor is in flight: then it waits (without the GIL) for
    /// that one and shares its result (`None`: no such key), calling `joined` as it
    /// starts to wait (so a count of joined calls moves while the load is in flight).
    pub(super) fn run(
        &self,
        py: Python<'_>,
        key: &[u8],
        floor: u64,
        joined: impl FnOnce(),
        load: impl FnOnce() -> PyResult<Option<Py<PyAny>>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let (flight, leads) = {
            let mut flying = lock(&self.flying);
            match flying.get(key) {
                Some(flight) if flight.floor >= floor => (Arc::clone(flight), false),
                _ => {
                    let flight = Arc::new(Flight {
                        floor,
                        result: Mutex::new(None),
                        done: Condvar::new(),
                    });
                    flying.insert(key.to_vec(), Arc::clone(&flight));
                    (flight, true)
                }
            }
        };
        if leads {
            let landing = Landing {
                flights: self,
                key,
                flight,
            };
            let result = load();
            let shared = match &result {
                Ok(value) => Ok(value.as_ref().map(|v| v.clone_ref(py))),
                Err(err) => Err(err.clone_ref(py)),
            };
            landing.land(shared);
            return result;
        }
        joined();
        py.detach(|| {
            let mut result = lock(&flight.result);
            while result.is_none() {
                result = flight
                    .done
                    .wait(result)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        });
        let result = lock(&flight.result);
        match result.as_ref() {
            Some(Ok(value)) => Ok(value.as_ref().map(|v| v.clone_ref(py))),
            Some(Err(err)) => Err(err.clone_ref(py)),
            None => unreachable!("invariant: the wait above ends only once a result is set"),
        }
    }
}
