//! The `progress=` argument of bulk calls: a progress bar, a callable, or nothing.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBool;

/// How many rows `put_many` encodes between two progress calls.
pub(crate) const PROGRESS_EVERY: usize = 8192;

/// What a `progress=` argument stands for: `True` is a progress bar (made and closed here),
/// a callable is called with the count so far, `False` or `None` is nothing.
pub(crate) struct Progress<'py> {
    callback: Option<Bound<'py, PyAny>>,
    owns_bar: bool,
}

impl<'py> Progress<'py> {
    /// `total` is asked for only when a bar is shown.
    pub(crate) fn new<T: IntoPyObject<'py>>(
        py: Python<'py>,
        progress: Option<&Bound<'py, PyAny>>,
        description: &str,
        total: impl FnOnce() -> T,
    ) -> PyResult<Self> {
        let Some(progress) = progress.filter(|p| !p.is_none()) else {
            return Ok(Self {
                callback: None,
                owns_bar: false,
            });
        };
        if !progress.is_instance_of::<PyBool>() {
            // Refused before anything is read or written: a callable found wanting only
            // when first called would fail a load after its commit.
            if !progress.is_callable() {
                return Err(PyTypeError::new_err(format!(
                    "progress must be True, False, None or a callable taking the count of rows \
                     so far, not {}",
                    progress.get_type().name()?
                )));
            }
            return Ok(Self {
                callback: Some(progress.clone()),
                owns_bar: false,
            });
        }
        let callback = if progress.is_truthy()? {
            let bar = py.import("replikv._progress")?.getattr("ProgressBar")?;
            Some(bar.call1((description, total()))?)
        } else {
            None
        };
        let owns_bar = callback.is_some();
        Ok(Self { callback, owns_bar })
    }

    /// The callable to call with the count so far, if any.
    pub(crate) fn callback(&self) -> Option<&Bound<'py, PyAny>> {
        self.callback.as_ref()
    }

    /// Closes the bar this made (a caller's callable is left as it is).
    pub(crate) fn finish(self) -> PyResult<()> {
        match self.callback.filter(|_| self.owns_bar) {
            Some(bar) => bar.call_method0("close").map(drop),
            None => Ok(()),
        }
    }
}
