//! Where the primary's counting replicas answer other members: what its heartbeats tell
//! each replica, so that a promotion can reach `members - quorum + 1` of them.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The member addresses replicas gave in their hellos, by name.
#[derive(Debug, Default)]
pub(super) struct Members(Mutex<BTreeMap<String, String>>);

impl Members {
    /// Records what a replica's hello said: a replica that fsyncs and listens is a member
    /// a promotion can ask; any other (or one that stopped listening) is forgotten.
    pub(super) fn learn(&self, name: &str, counts: bool, listen: Option<String>) {
        let mut members = self.lock();
        match listen.filter(|_| counts) {
            Some(address) => {
                members.insert(name.to_owned(), address);
            }
            None => {
                members.remove(name);
            }
        }
    }

    /// Forgets a replica whose slot was dropped.
    pub(super) fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Where the member `name` answers, if it is one.
    pub(super) fn address_of(&self, name: &str) -> Option<String> {
        self.lock().get(name).cloned()
    }

    /// Every member's `(name, address)`, by name.
    pub(super) fn addresses(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(name, address)| (name.clone(), address.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
