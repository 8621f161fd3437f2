//! Conversions from the worker protocol's types (`protocol`) to the stored
//! records (`store`): engine states, profiles and inventory entries. The
//! one place where the two meet, so neither knows the other.
//!
//! Everything here reads peer input: nothing panics, and an inventory entry
//! whose fields fail their patterns is refused with the reason.

use protocol::container::{ContainerInfo, ContainerState as EngineState, Profile};
use protocol::validate;

use crate::store::{ContainerState, InventoryItem};

/// The record state an engine state means. `paused` counts as `running`
/// (it holds its resources and resumes as it was); `None` means the engine
/// did not say (`unknown`), so the record keeps what it had.
pub fn record_state(state: EngineState) -> Option<ContainerState> {
    match state {
        EngineState::Created => Some(ContainerState::Created),
        EngineState::Running | EngineState::Paused => Some(ContainerState::Running),
        EngineState::Exited => Some(ContainerState::Exited),
        EngineState::Removed => Some(ContainerState::Removed),
        EngineState::Unknown => None,
    }
}

/// The stored (and HTTP) spelling of a profile.
pub fn profile_name(profile: Profile) -> &'static str {
    match profile {
        Profile::Open => "open",
        Profile::Standard => "standard",
        Profile::Strict => "strict",
        Profile::Offline => "offline",
    }
}

/// Printable text of 1 to `max` bytes.
fn text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(format!(
            "{field} must be 1 to {max} bytes of printable text"
        ));
    }
    Ok(())
}

/// Check one inventory entry and convert it, or say why it is refused.
/// Ids must match our id pattern (they become keys); the name must be a
/// container name; image and engine id need only be bounded printable text
/// (they are shown, never passed to a command); an allow-list must hold
/// only patterns a create could have carried.
pub fn inventory_item(info: ContainerInfo) -> Result<InventoryItem, String> {
    validate::id("containerId", &info.container_id).map_err(|e| e.to_string())?;
    validate::id("tenantId", &info.tenant_id).map_err(|e| e.to_string())?;
    validate::container_name(&info.name).map_err(|e| e.to_string())?;
    text("engineId", &info.engine_id, 128)?;
    text("image", &info.image, 255)?;
    let allowed_domains = info
        .allowed_domains
        .as_deref()
        .map(protocol::domains::check_list)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(InventoryItem {
        allowed_domains,
        state: record_state(info.state),
        profile: info.profile.map(|p| profile_name(p).to_owned()),
        container_id: info.container_id,
        tenant_id: info.tenant_id,
        engine_id: info.engine_id,
        name: info.name,
        image: info.image,
        created_at: info.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ContainerInfo {
        ContainerInfo {
            container_id: "c-1".into(),
            tenant_id: "t-1".into(),
            engine_id: "abc123".into(),
            name: "dev".into(),
            image: "localhost/busybox:latest".into(),
            state: EngineState::Paused,
            profile: Some(Profile::Strict),
            created_at: Some(5),
            allowed_domains: Some(vec!["PyPI.org".into(), "*.example.com".into()]),
        }
    }

    #[test]
    fn a_good_entry_converts() {
        let item = inventory_item(info()).unwrap();
        assert_eq!(item.state, Some(ContainerState::Running));
        assert_eq!(item.profile.as_deref(), Some("strict"));
        assert_eq!(item.created_at, Some(5));
        let list = item.allowed_domains.unwrap();
        assert_eq!(list, ["pypi.org", "*.example.com"], "checked, lowercased");
    }

    #[test]
    fn hostile_entries_are_refused_with_a_reason() {
        let cases: [fn(&mut ContainerInfo); 7] = [
            |i| i.container_id = "../x".into(),
            |i| i.tenant_id = String::new(),
            |i| i.name = "--privileged".into(),
            |i| i.engine_id = "a\nb".into(),
            |i| i.image = "x".repeat(300),
            |i| i.allowed_domains = Some(vec!["*.com".into()]),
            |i| i.allowed_domains = Some(vec!["10.0.0.1".into()]),
        ];
        for break_it in cases {
            let mut bad = info();
            break_it(&mut bad);
            let reason = inventory_item(bad).unwrap_err();
            assert!(!reason.is_empty());
        }
    }

    #[test]
    fn unknown_engine_state_keeps_the_record_state() {
        assert_eq!(record_state(EngineState::Unknown), None);
        assert_eq!(
            record_state(EngineState::Removed),
            Some(ContainerState::Removed)
        );
    }
}
