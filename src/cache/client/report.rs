//! What a client knows of each node: how it stands, its failures, and its own `INFO`.

use std::collections::HashMap;

use super::cluster::Cluster;
use super::conn::refused;
use super::health::Standing;
use super::reply::Value;
use super::routing::Answer;

/// One node, as [`Cluster::nodes`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Its address.
    pub address: String,
    /// How it stands with this client.
    pub standing: Standing,
    /// Its `INFO` fields (`keyspace_hits`, `processed_lsn`, …), when it answered.
    pub info: Option<HashMap<String, String>>,
    /// Times it failed (and was left out for a while).
    pub failures: u64,
    /// The last failure or refusal met on it, or why it is kept out.
    pub last_error: Option<String>,
    /// Request writes sent to it so far, each one a round trip.
    pub round_trips: u64,
}

/// `INFO`'s `field:value` lines (section headers and blank lines skipped).
fn fields(text: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(field, value)| (field.to_owned(), value.to_owned()))
        .collect()
}

impl Cluster {
    /// Every node, in the order given: its standing, and its `INFO` asked of every node
    /// that is not down (in one round trip in all).
    #[must_use]
    pub fn nodes(&self) -> Vec<NodeReport> {
        let info = [["INFO"]];
        let errands: Vec<(usize, &[[&str; 1]])> = self
            .reachable()
            .into_iter()
            .map(|node| (node, info.as_slice()))
            .collect();
        let mut answers: Vec<Option<Result<HashMap<String, String>, String>>> =
            vec![None; self.members.len()];
        for (&(node, _), answer) in errands.iter().zip(self.fan_out(&errands)) {
            answers[node] = match answer {
                Ok(Answer::Replies(replies)) => match &replies[0] {
                    Value::Bulk(text) => Some(Ok(fields(text))),
                    other => Some(Err(
                        refused(&self.members[node].address, "INFO", other).to_string()
                    )),
                },
                Ok(Answer::Failed) => None,
                Err(err) => Some(Err(err.to_string())),
            };
        }
        self.members
            .iter()
            .zip(answers)
            .map(|(member, answer)| {
                let health = member.health();
                let (info, refusal) = match answer {
                    Some(Ok(info)) => (Some(info), None),
                    Some(Err(refusal)) => (None, Some(refusal)),
                    None => (None, None),
                };
                NodeReport {
                    address: member.address.clone(),
                    standing: health.standing(),
                    info,
                    failures: health.failures(),
                    last_error: refusal.or_else(|| health.last_error().map(str::to_owned)),
                    round_trips: member.round_trips(),
                }
            })
            .collect()
    }
}
