//! The Python module `replikv._core`: thin wrappers over the core. The only place that
//! names pyo3.

mod args;
mod arrow;
mod arrow_in;
mod batch;
mod cache;
mod cache_node;
mod changes;
mod committing;
mod display;
mod diverged;
mod errors;
mod feed_arrow;
mod iter;
mod log_tail;
mod logs;
mod primary;
mod progress;
mod put_many;
mod replica;
mod replication;
mod scrub;
mod settings;
mod stats;
mod status;
mod store;
mod switchover;
mod transaction;
mod types;
mod value;
mod verify;

use pyo3::pymodule;

#[pymodule]
mod _core {
    #[pymodule_export]
    use super::arrow::{decode_packed, PyArrowStream};
    #[pymodule_export]
    use super::batch::PyBatch;
    #[pymodule_export]
    use super::cache::stats::{PyCacheNodeStats, PyCacheStats};
    #[pymodule_export]
    use super::cache::PyCache;
    #[pymodule_export]
    use super::cache_node::PyCacheNode;
    #[pymodule_export]
    use super::changes::{PyChange, PyChanges, PyOps, PyOpsIter};
    #[pymodule_export]
    use super::diverged::read_diverged_report;
    #[pymodule_export]
    use super::feed_arrow::PyChangeStream;
    #[pymodule_export]
    use super::iter::PyScan;
    #[pymodule_export]
    use super::log_tail::PyLogTail;
    #[pymodule_export]
    use super::logs::{forward_logs, stop_logs};
    #[pymodule_export]
    use super::primary::{promote_stopped, PyPrimary, PyPromotion};
    #[pymodule_export]
    use super::replica::PyReplica;
    #[pymodule_export]
    use super::replication::{fetch_status, request_drop_slot};
    #[pymodule_export]
    use super::scrub::{PyDamage, PyScrubReport};
    #[pymodule_export]
    use super::stats::PyStoreStats;
    #[pymodule_export]
    use super::status::{PyPrimaryStatus, PyReplicaInfo, PyReplicaStatus, PySlot};
    #[pymodule_export]
    use super::store::PyStore;
    #[pymodule_export]
    use super::switchover::{request_follow, request_switchover, PySwitchover};
    #[pymodule_export]
    use super::transaction::PyTransaction;
    #[pymodule_export]
    use super::types::{PyChecksum, PyOp, PyReceipt};
    #[pymodule_export]
    use super::value::{decode_value, encode_value};
    #[pymodule_export]
    use super::verify::{fetch_verify, PyReplicaVerify, PyVerifyReport};

    use pyo3::prelude::{Bound, PyModule, PyModuleMethods, PyResult};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
