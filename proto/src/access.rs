//! Who may call what: the roles, and the one table of what each gRPC method
//! needs. The engine applies it to every request; the console derives from
//! it which keys to offer, so the two cannot disagree.
//!
//! A method missing from the table is refused to everyone (UNIMPLEMENTED),
//! so a new RPC cannot be served before someone decides who may call it (a
//! unit test checks the table against the proto descriptors).

use serde::{Deserialize, Serialize};

use Need::{Identity, Role as R};
use Role::{Admin, Agent, Approver, Operator, Viewer};

/// What a caller may do. Roles are fixed; each includes those below it:
/// admin includes operator, approver and viewer; operator and approver
/// include viewer. Agent (the worker protocol) is included by none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Submits, cancels and retries runs; drains workers; pauses queues.
    Operator,
    /// Decides approvals.
    Approver,
    /// Everything a person may do: force-release, recycle, quarantines.
    Admin,
    /// Speaks the worker protocol, and nothing else.
    Agent,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Operator,
        Role::Approver,
        Role::Admin,
        Role::Agent,
    ];

    pub fn word(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Approver => "approver",
            Self::Admin => "admin",
            Self::Agent => "agent",
        }
    }

    pub fn parse(word: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.word() == word)
    }

    /// The roles this one includes, itself first.
    pub fn includes(self) -> &'static [Role] {
        match self {
            Self::Viewer => &[Role::Viewer],
            Self::Operator => &[Role::Operator, Role::Viewer],
            Self::Approver => &[Role::Approver, Role::Viewer],
            Self::Admin => &[Role::Admin, Role::Operator, Role::Approver, Role::Viewer],
            Self::Agent => &[Role::Agent],
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// What a call needs from its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing, not even an identity: health checks and reflection, so
    /// that stock tools work.
    Open,
    /// An identity, whatever its roles: asking who you are.
    Identity,
    /// An identity holding this role (admin holds every role but agent).
    Role(Role),
}

/// Services open to anyone, by path prefix.
const OPEN: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Every opsdeck method, by its gRPC path.
pub const METHODS: &[(&str, Need)] = &[
    ("/opsdeck.v1.Runs/SubmitRun", R(Operator)),
    ("/opsdeck.v1.Runs/SubmitRuns", R(Operator)),
    ("/opsdeck.v1.Runs/GetRun", R(Viewer)),
    ("/opsdeck.v1.Runs/ListRuns", R(Viewer)),
    ("/opsdeck.v1.Runs/CancelRun", R(Operator)),
    ("/opsdeck.v1.Runs/RetryRun", R(Operator)),
    ("/opsdeck.v1.Runs/CancelRuns", R(Operator)),
    ("/opsdeck.v1.Runs/RetryRuns", R(Operator)),
    ("/opsdeck.v1.Runs/GetOutput", R(Viewer)),
    ("/opsdeck.v1.Runs/FollowOutput", R(Viewer)),
    ("/opsdeck.v1.Runs/ListQuarantines", R(Viewer)),
    ("/opsdeck.v1.Runs/ClearQuarantine", R(Admin)),
    ("/opsdeck.v1.Events/ListEvents", R(Viewer)),
    ("/opsdeck.v1.Events/FollowEvents", R(Viewer)),
    ("/opsdeck.v1.Events/ListNotifications", R(Viewer)),
    ("/opsdeck.v1.Workers/ListWorkers", R(Viewer)),
    ("/opsdeck.v1.Workers/GetWorker", R(Viewer)),
    ("/opsdeck.v1.Workers/DrainWorker", R(Operator)),
    ("/opsdeck.v1.Workers/UndrainWorker", R(Operator)),
    ("/opsdeck.v1.Workers/RecycleWorker", R(Admin)),
    ("/opsdeck.v1.Workers/ForgetWorker", R(Admin)),
    ("/opsdeck.v1.Workers/ResetBreaker", R(Operator)),
    ("/opsdeck.v1.Queues/ListQueues", R(Viewer)),
    ("/opsdeck.v1.Queues/PauseQueue", R(Operator)),
    ("/opsdeck.v1.Queues/ResumeQueue", R(Operator)),
    ("/opsdeck.v1.Queues/SetQueue", R(Operator)),
    ("/opsdeck.v1.Approvals/ListApprovals", R(Viewer)),
    ("/opsdeck.v1.Approvals/Decide", R(Approver)),
    ("/opsdeck.v1.Leases/ListLeases", R(Viewer)),
    ("/opsdeck.v1.Leases/ForceRelease", R(Admin)),
    ("/opsdeck.v1.Schedules/AddSchedule", R(Operator)),
    ("/opsdeck.v1.Schedules/ListSchedules", R(Viewer)),
    ("/opsdeck.v1.Schedules/GetSchedule", R(Viewer)),
    ("/opsdeck.v1.Schedules/PauseSchedule", R(Operator)),
    ("/opsdeck.v1.Schedules/ResumeSchedule", R(Operator)),
    ("/opsdeck.v1.Schedules/RemoveSchedule", R(Operator)),
    ("/opsdeck.v1.Schedules/RunScheduleNow", R(Operator)),
    ("/opsdeck.v1.Console/Whoami", Identity),
    ("/opsdeck.v1.Console/Watch", R(Viewer)),
    ("/opsdeck.v1.Console/ResolveId", R(Viewer)),
    ("/opsdeck.v1.Agent/Session", R(Agent)),
];

/// What a call to `path` needs; `None` for a method nobody may call.
pub fn need(path: &str) -> Option<Need> {
    if OPEN.iter().any(|prefix| path.starts_with(prefix)) {
        return Some(Need::Open);
    }
    METHODS
        .iter()
        .find(|(method, _)| *method == path)
        .map(|(_, need)| *need)
}

/// The role a call to `path` needs, for a method that needs one.
pub fn role_of(path: &str) -> Option<Role> {
    match need(path)? {
        Need::Role(role) => Some(role),
        Need::Open | Need::Identity => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    use super::*;

    /// Every method the proto files declare, as gRPC paths.
    fn declared() -> BTreeSet<String> {
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the compiled descriptors decode");
        let mut paths = BTreeSet::new();
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        paths
    }

    #[test]
    fn every_declared_method_is_in_the_table_and_nothing_else_is() {
        let declared = declared();
        assert!(declared.len() > 20, "{declared:?}");
        let unlisted: Vec<_> = declared.iter().filter(|p| need(p).is_none()).collect();
        assert!(
            unlisted.is_empty(),
            "methods with no role in proto/src/access.rs: {unlisted:?}"
        );
        let stale: Vec<_> = METHODS
            .iter()
            .filter(|(p, _)| !declared.contains(*p))
            .collect();
        assert!(
            stale.is_empty(),
            "table entries no proto declares: {stale:?}"
        );
    }

    #[test]
    fn health_and_reflection_are_open_and_unknown_methods_are_closed() {
        assert_eq!(need("/grpc.health.v1.Health/Check"), Some(Need::Open));
        assert_eq!(
            need("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Some(Need::Open)
        );
        assert_eq!(need("/opsdeck.v1.Runs/DeleteEverything"), None);
        assert_eq!(need("/grpc.health.v1.Healthy/Check"), None);
        assert_eq!(role_of("/opsdeck.v1.Console/Whoami"), None);
        assert_eq!(role_of("/opsdeck.v1.Leases/ForceRelease"), Some(Admin));
    }

    #[test]
    fn only_agents_speak_the_worker_protocol_and_agents_speak_nothing_else() {
        for (path, need) in METHODS {
            let agent_only = *need == Need::Role(Role::Agent);
            assert_eq!(agent_only, path.starts_with("/opsdeck.v1.Agent/"), "{path}");
        }
    }

    #[test]
    fn role_words_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.word()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
