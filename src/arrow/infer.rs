//! Finding an export's shape (the kinds of its columns) from every row it holds, or from
//! its first rows: on the calling thread, or on every core when the rows may fill more
//! than one batch.

use std::sync::Arc;

use super::export::{bounds, unfit, ExportRequest};
use super::jobs::Observe;
use super::parallel::{workers, Parallel};
use super::shape::Shape;
use crate::error::Result;
use crate::store::SnapshotView;

/// The shape of the rows asked for: of the first `sample` rows, on this thread; of every
/// row (`None`), on every core when they may fill more than one batch.
pub(super) fn shape(
    view: &Arc<SnapshotView>,
    request: &ExportRequest,
    sample: Option<u64>,
) -> Result<Shape> {
    let threads = workers().filter(|_| sample.is_none() && !fits_one_batch(view, request));
    match threads.and_then(|workers| shape_on_threads(view, request, workers)) {
        Some(shape) => shape,
        None => shape_here(view, request, sample),
    }
}

/// Whether the rows asked for fit in one batch whatever the bounds: starting threads would
/// cost more than they save.
fn fits_one_batch(view: &SnapshotView, request: &ExportRequest) -> bool {
    view.sums
        .get(&request.table)
        .is_none_or(|sum| sum.rows <= request.rows_per_batch() as u64)
}

/// The shape of the first `sample` rows asked for (all if `None`), found on this thread.
pub(super) fn shape_here(
    view: &SnapshotView,
    request: &ExportRequest,
    sample: Option<u64>,
) -> Result<Shape> {
    let mut shape = Shape::new(request.columns.as_deref());
    let mut failed = None;
    view.visit(
        &request.table,
        bounds(&request.bounds),
        &mut |key, value| {
            if let Err(stopped) = request.stop.check() {
                failed = Some(stopped);
                return false;
            }
            match shape.observe(key, value) {
                Ok(()) => sample.is_none_or(|rows| shape.rows() < rows),
                Err(err) => {
                    failed = Some(unfit(&request.table, key, &err.into()));
                    false
                }
            }
        },
    )?;
    match failed {
        Some(err) => Err(err),
        None => Ok(shape),
    }
}

/// The shape of every row asked for, found by `workers` threads a chunk each and put
/// together in key order; `None` if no thread could be started. A bad row fails it with
/// the first bad row in key order, as on one thread.
pub(super) fn shape_on_threads(
    view: &Arc<SnapshotView>,
    request: &ExportRequest,
    workers: usize,
) -> Option<Result<Shape>> {
    let mut chunks = Parallel::start(view, request, workers, || Observe::new(request))?;
    let mut shape = Shape::new(request.columns.as_deref());
    loop {
        if let Err(stopped) = request.stop.check() {
            return Some(Err(stopped));
        }
        match chunks.next() {
            Ok(Some(chunk)) => shape.merge(chunk),
            Ok(None) => return Some(Ok(shape)),
            Err(failure) => return Some(Err(failure.into_error(&request.table))),
        }
    }
}
