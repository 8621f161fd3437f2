//! Members' API tokens: mint, list, revoke, and find a member by a token's
//! hash, each one redb transaction.
//!
//! Tokens are stored only as SHA-256 hashes: `member_tokens` keeps the
//! record (listable, without the secret), `token_hashes` maps a live
//! token's hash to its id. Revoking removes the hash from `token_hashes`
//! in the same transaction that marks the record, so a revoked token is
//! refused from that commit on.

use serde::{Deserialize, Serialize};

use super::identity::{not_found, MEMBERS, MEMBER_TOKENS, TOKEN_HASHES};
use super::{decode, encode, failed, get_json, Member, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberToken {
    pub id: String,
    pub member_id: String,
    pub name: String,
    /// SHA-256 of the token, hex.
    pub hash: String,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

impl Store {
    /// Store a new token of an existing member.
    pub fn create_member_token(&self, token: &MemberToken) -> Result<(), StoreError> {
        self.write("commit a token", |txn| {
            let members = txn.open_table(MEMBERS).map_err(failed("open members"))?;
            if get_json::<Member>(&members, "members", &token.member_id)?.is_none() {
                return Err(not_found("member", &token.member_id));
            }
            let mut tokens = txn
                .open_table(MEMBER_TOKENS)
                .map_err(failed("open member tokens"))?;
            tokens
                .insert(token.id.as_str(), encode(token).as_str())
                .map_err(failed("insert a token"))?;
            let mut hashes = txn
                .open_table(TOKEN_HASHES)
                .map_err(failed("open token hashes"))?;
            hashes
                .insert(token.hash.as_str(), token.id.as_str())
                .map_err(failed("insert a token hash"))?;
            Ok(())
        })
    }

    pub fn get_member_token(&self, id: &str) -> Result<Option<MemberToken>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let tokens = txn
            .open_table(MEMBER_TOKENS)
            .map_err(failed("open member tokens"))?;
        get_json(&tokens, "member_tokens", id)
    }

    /// A member's tokens (revoked ones too), oldest first.
    pub fn list_member_tokens(&self, member_id: &str) -> Result<Vec<MemberToken>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let tokens = txn
            .open_table(MEMBER_TOKENS)
            .map_err(failed("open member tokens"))?;
        let mut out: Vec<MemberToken> = Vec::new();
        for (key, value) in tokens.all().map_err(failed("list tokens"))? {
            let token: MemberToken = decode("member_tokens", &key, &value)?;
            if token.member_id == member_id {
                out.push(token);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Revoke a token; revoking twice is not an error.
    pub fn revoke_member_token(&self, id: &str, now_ms: u64) -> Result<MemberToken, StoreError> {
        self.write("commit a token revocation", |txn| {
            let mut tokens = txn
                .open_table(MEMBER_TOKENS)
                .map_err(failed("open member tokens"))?;
            let mut token = get_json::<MemberToken>(&tokens, "member_tokens", id)?
                .ok_or_else(|| not_found("token", id))?;
            if token.revoked_at.is_none() {
                let mut hashes = txn
                    .open_table(TOKEN_HASHES)
                    .map_err(failed("open token hashes"))?;
                hashes
                    .remove(token.hash.as_str())
                    .map_err(failed("forget a token hash"))?;
                token.revoked_at = Some(now_ms);
                tokens
                    .insert(id, encode(&token).as_str())
                    .map_err(failed("revoke a token"))?;
            }
            Ok(token)
        })
    }

    /// The member and token a live token's hash belongs to, in one read.
    pub fn member_by_token(&self, hash_hex: &str) -> Result<Option<(Member, String)>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let hashes = txn
            .open_table(TOKEN_HASHES)
            .map_err(failed("open token hashes"))?;
        let Some(token_id) = hashes.get(hash_hex).map_err(failed("read a token hash"))? else {
            return Ok(None);
        };
        let tokens = txn
            .open_table(MEMBER_TOKENS)
            .map_err(failed("open member tokens"))?;
        let Some(token) = get_json::<MemberToken>(&tokens, "member_tokens", &token_id)? else {
            return Ok(None);
        };
        let members = txn.open_table(MEMBERS).map_err(failed("open members"))?;
        let member = get_json::<Member>(&members, "members", &token.member_id)?;
        Ok(member.map(|m| (m, token_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemberChange, Role};

    fn store(name: &str) -> Store {
        let dir = std::env::temp_dir().join(format!(
            "crops-identity-{name}-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        Store::open(&dir).unwrap()
    }

    #[test]
    fn tokens_are_found_until_revoked_and_die_with_their_member() {
        let s = store("tokens");
        let org = s.ensure_default_org("o1", 1).unwrap();
        assert_eq!(s.ensure_default_org("o2", 2).unwrap(), org);
        let member = Member {
            id: "m1".into(),
            org_id: org.id.clone(),
            name: "ana".into(),
            role: Role::Member,
            tenants: vec![],
            created_at: 3,
        };
        s.create_member(&member).unwrap();
        assert!(matches!(
            s.create_member(&Member {
                id: "m2".into(),
                ..member.clone()
            }),
            Err(StoreError::NameTaken { .. })
        ));
        for (id, hash) in [("t1", "h1"), ("t2", "h2")] {
            let token = MemberToken {
                id: id.into(),
                member_id: "m1".into(),
                name: id.into(),
                hash: hash.into(),
                created_at: 4,
                revoked_at: None,
            };
            s.create_member_token(&token).unwrap();
        }
        assert_eq!(s.member_by_token("h1").unwrap().unwrap().1, "t1");
        s.revoke_member_token("t1", 5).unwrap();
        assert!(s.member_by_token("h1").unwrap().is_none());
        assert!(s.member_by_token("h2").unwrap().is_some());
        s.delete_member("m1", 6).unwrap();
        assert!(s.member_by_token("h2").unwrap().is_none());
        assert_eq!(
            s.get_member_token("t2").unwrap().unwrap().revoked_at,
            Some(6)
        );
        assert!(matches!(
            s.update_member("m1", MemberChange::Role(Role::Admin)),
            Err(StoreError::NotFound { .. })
        ));
    }
}
