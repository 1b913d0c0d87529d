//! The topic tree. Every topic the cluster uses is built here, nowhere else.
//!
//! ```text
//! maestro/v1/<cluster>/presence/<peer-id>        retained presence of each peer (online, or offline by last will)
//! maestro/v1/<cluster>/req/all                   requests to every peer
//! maestro/v1/<cluster>/req/role/<role>           requests to one role (worker, inspector)
//! maestro/v1/<cluster>/req/group/<group>         requests to one group
//! maestro/v1/<cluster>/req/peer/<peer-id>        requests to one peer
//! maestro/v1/<cluster>/reply/<controller-id>     replies to one controller
//! maestro/v1/<cluster>/event/<peer-id>/<kind>    events a peer publishes (stats, notifications)
//! ```

use crate::ids::{ClusterId, PeerId, Segment};
use crate::note::{PeerInfo, Role};

/// The root of every topic; the version is the protocol's major version.
pub const ROOT: &str = "maestro/v1";

/// Who a request is addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Role(Role),
    Group(Segment),
    Peer(PeerId),
}

impl Target {
    /// True when a request to this target reaches `peer`.
    pub fn matches(&self, peer: &PeerInfo) -> bool {
        match self {
            Target::All => true,
            Target::Role(role) => peer.role == *role,
            Target::Group(group) => peer.group == *group,
            Target::Peer(id) => peer.id == *id,
        }
    }
}

/// Builds the topics of one cluster.
#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
}

impl Topics {
    pub fn new(cluster: &ClusterId) -> Self {
        Self {
            base: format!("{ROOT}/{cluster}"),
        }
    }

    /// Retained presence of one peer.
    pub fn presence(&self, peer: &PeerId) -> String {
        format!("{}/presence/{peer}", self.base)
    }

    /// Filter matching every peer's presence.
    pub fn presence_filter(&self) -> String {
        format!("{}/presence/+", self.base)
    }

    /// Where a request to `target` is published.
    pub fn request(&self, target: &Target) -> String {
        match target {
            Target::All => format!("{}/req/all", self.base),
            Target::Role(role) => format!("{}/req/role/{}", self.base, role.as_str()),
            Target::Group(group) => format!("{}/req/group/{group}", self.base),
            Target::Peer(peer) => format!("{}/req/peer/{peer}", self.base),
        }
    }

    /// The request topics one peer subscribes to: all, its role, its group, itself.
    pub fn requests_for(&self, peer: &PeerId, role: Role, group: &Segment) -> [String; 4] {
        [
            self.request(&Target::All),
            self.request(&Target::Role(role)),
            self.request(&Target::Group(group.clone())),
            self.request(&Target::Peer(peer.clone())),
        ]
    }

    /// Replies to one controller.
    pub fn reply(&self, controller: &PeerId) -> String {
        format!("{}/reply/{controller}", self.base)
    }

    /// True when `topic` is a reply topic of this cluster. Peers only answer to such
    /// topics, so a note cannot make them publish anywhere else.
    pub fn is_reply_topic(&self, topic: &str) -> bool {
        topic
            .strip_prefix(&self.base)
            .and_then(|rest| rest.strip_prefix("/reply/"))
            .is_some_and(|id| PeerId::new(id).is_ok())
    }

    /// The peer whose presence `topic` is, when it is a presence topic of this cluster.
    pub fn presence_peer(&self, topic: &str) -> Option<PeerId> {
        topic
            .strip_prefix(&self.base)
            .and_then(|rest| rest.strip_prefix("/presence/"))
            .and_then(|id| PeerId::new(id).ok())
    }

    /// An event of one peer, for example `stats`.
    pub fn event(&self, peer: &PeerId, kind: &str) -> String {
        format!("{}/event/{peer}/{kind}", self.base)
    }

    /// The peer and kind of an event topic of this cluster.
    pub fn event_peer<'a>(&self, topic: &'a str) -> Option<(PeerId, &'a str)> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/event/")?;
        let (peer, kind) = rest.split_once('/')?;
        Some((PeerId::new(peer).ok()?, kind))
    }

    /// A controller's liveness: its online note, and the offline note of its last will.
    /// Workers in one of its runs watch it, so a run never outlives its controller.
    pub fn controller(&self, controller: &PeerId) -> String {
        format!("{}/controller/{controller}", self.base)
    }

    /// The controller whose liveness topic `topic` is.
    pub fn controller_peer(&self, topic: &str) -> Option<PeerId> {
        topic
            .strip_prefix(&self.base)
            .and_then(|rest| rest.strip_prefix("/controller/"))
            .and_then(|id| PeerId::new(id).ok())
    }

    /// Filter matching every event of every peer.
    pub fn event_filter(&self) -> String {
        format!("{}/event/+/+", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics::new(&ClusterId::new("c1").unwrap())
    }

    #[test]
    fn tree() {
        let t = topics();
        let p = PeerId::new("w1").unwrap();
        assert_eq!(t.presence(&p), "maestro/v1/c1/presence/w1");
        assert_eq!(
            t.presence_peer("maestro/v1/c1/presence/w1"),
            Some(p.clone())
        );
        assert_eq!(t.presence_peer("maestro/v1/c2/presence/w1"), None);
        assert_eq!(t.presence_filter(), "maestro/v1/c1/presence/+");
        assert_eq!(t.request(&Target::All), "maestro/v1/c1/req/all");
        assert_eq!(
            t.request(&Target::Role(Role::Inspector)),
            "maestro/v1/c1/req/role/inspector"
        );
        assert_eq!(
            t.request(&Target::Group(Segment::new("g").unwrap())),
            "maestro/v1/c1/req/group/g"
        );
        assert_eq!(
            t.request(&Target::Peer(p.clone())),
            "maestro/v1/c1/req/peer/w1"
        );
        assert_eq!(t.reply(&p), "maestro/v1/c1/reply/w1");
        assert_eq!(t.event(&p, "stats"), "maestro/v1/c1/event/w1/stats");
        assert_eq!(
            t.event_peer("maestro/v1/c1/event/w1/stats"),
            Some((p.clone(), "stats"))
        );
        assert_eq!(t.event_peer("maestro/v1/c2/event/w1/stats"), None);
        assert_eq!(t.controller(&p), "maestro/v1/c1/controller/w1");
        assert_eq!(
            t.controller_peer("maestro/v1/c1/controller/w1"),
            Some(p.clone())
        );
        assert_eq!(t.controller_peer("maestro/v1/c1/presence/w1"), None);
    }

    #[test]
    fn reply_topics_are_confined_to_the_cluster() {
        let t = topics();
        assert!(t.is_reply_topic("maestro/v1/c1/reply/cli-1"));
        assert!(!t.is_reply_topic("maestro/v1/c2/reply/cli-1"));
        assert!(!t.is_reply_topic("maestro/v1/c1/reply/a/b"));
        assert!(!t.is_reply_topic("maestro/v1/c1/presence/x"));
        assert!(!t.is_reply_topic("elsewhere"));
    }
}
