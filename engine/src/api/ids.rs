//! Console.ResolveId: the whole id of a run, approval, lease or worker from
//! what a person typed — the id, or a unique prefix or suffix of it.
//!
//! Why a call of its own rather than short ids accepted by every call: a
//! change then always names exactly one object, whole, in its request and
//! in its event, whatever client sent it (grpcurl and scripts included);
//! a short id is a convenience of the person typing, resolved once by
//! their client before it acts, and an ambiguous one is refused before
//! anything changes. The match is made in the store, where every object
//! is, live or in history: a prefix by a range on the id column's index
//! (ULIDs sort by time), a suffix among the newest ids.

use opsdeck_proto::names::Word;
use opsdeck_proto::v1 as pb;
use tonic::Status;

use super::{Api, id_arg};
use crate::store::{IdMatches, IdTable, SUFFIX_SCAN};

/// The fewest characters of an id that are looked up as a prefix or a
/// suffix: fewer would match too much to be worth a guess.
pub const MIN_PART: usize = 6;

/// Candidates listed in an ambiguous answer, at most.
const LISTED: u32 = 10;

impl Api {
    pub(super) async fn resolve_id(
        &self,
        req: pb::ResolveIdRequest,
    ) -> Result<pb::ResolveIdResponse, Status> {
        let kind = pb::IdKind::try_from(req.kind)
            .ok()
            .filter(|k| *k != pb::IdKind::Unspecified)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "kind {} is not a kind of id; give one of: {}",
                    req.kind,
                    pb::IdKind::words()
                ))
            })?;
        let what = kind.word();
        let text = id_arg(&what, req.id)?;
        let (table, text) = match kind {
            pb::IdKind::Worker => (IdTable::Workers, text),
            // ULIDs: Crockford's base 32 reads the same in either case.
            pb::IdKind::Run => (IdTable::Runs, text.to_ascii_uppercase()),
            pb::IdKind::Approval => (IdTable::Approvals, text.to_ascii_uppercase()),
            pb::IdKind::Lease | pb::IdKind::Unspecified => {
                (IdTable::Leases, text.to_ascii_uppercase())
            }
        };
        let found = self
            .store
            .match_ids(table, &text, LISTED + 1)
            .await
            .map_err(super::store_error)?;
        let (exact, short) = (found.ids.contains(&text), text.chars().count() < MIN_PART);
        let id = if exact || short {
            // Fewer characters than that name only an id that is exactly them.
            found.ids.into_iter().find(|id| *id == text)
        } else {
            pick(&what, &text, found)?
        };
        match id {
            Some(id) => Ok(pb::ResolveIdResponse { id }),
            None => Err(not_found(&what, &text, short, false)),
        }
    }
}

/// The one id `found` holds, `None` for none, or INVALID_ARGUMENT listing
/// them.
fn pick(what: &str, text: &str, found: IdMatches) -> Result<Option<String>, Status> {
    match found.ids.as_slice() {
        [] if found.bounded => Err(not_found(what, text, false, true)),
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => {
            let shown = many.len().min(LISTED as usize);
            let mut list = many[..shown].join(", ");
            if many.len() > shown {
                list.push_str(", …");
            }
            Err(Status::invalid_argument(format!(
                "{text:?} is the start or end of more than one {what} id ({list}); give more \
                 of the id"
            )))
        }
    }
}

fn not_found(what: &str, text: &str, short: bool, bounded: bool) -> Status {
    let list = match what {
        "run" => "`opsdeck runs` lists runs",
        "approval" => "`opsdeck approvals --all` lists approvals",
        "lease" => "`opsdeck leases --all` lists leases",
        _ => "`opsdeck workers` lists workers",
    };
    let how = if short {
        format!(
            "; {text:?} is too short to look up as a part of an id: give at least {MIN_PART} \
             characters"
        )
    } else if bounded {
        format!(
            " among the newest {SUFFIX_SCAN} {what}s' ends, nor one starting with it; give the \
             whole id"
        )
    } else {
        String::new()
    };
    Status::not_found(format!(
        "no {what} with id {text:?}, nor one whose id starts or ends with it{how}; {list}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(ids: &[&str]) -> IdMatches {
        IdMatches {
            ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            bounded: false,
        }
    }

    #[test]
    fn one_match_is_the_id_none_is_none_and_several_are_listed() {
        assert_eq!(
            pick("run", "HR1GQF", found(&["01ABHR1GQF"])).unwrap(),
            Some("01ABHR1GQF".to_owned())
        );
        assert_eq!(pick("run", "HR1GQF", found(&[])).unwrap(), None);
        let e = pick("run", "HR1GQF", found(&["01A", "01B"])).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("01A, 01B"), "{}", e.message());
        assert!(e.message().contains("give more"), "{}", e.message());
    }

    #[test]
    fn not_found_names_the_text_and_how_to_list() {
        let e = not_found("run", "HR1GQFDW", false, false);
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(e.message().contains("\"HR1GQFDW\""), "{}", e.message());
        assert!(e.message().contains("opsdeck runs"), "{}", e.message());
        let short = not_found("worker", "w9", true, false);
        assert!(
            short.message().contains("at least 6"),
            "{}",
            short.message()
        );
    }
}
