//! Nodes: podCIDR and podCIDRs kept as one (kube's v1 conversion: the list wins, the
//! single field is its first element), each a CIDR, and fixed once set: the node IPAM
//! controller (or the node itself) sets them once, and a node's pods live in that range.

use serde_json::{Value, json};

use super::{PLAIN, Problem, Strategy};

pub const NODE: Strategy = Strategy { status: true, defaults: |obj, _| defaults(obj), validate, ..PLAIN };

fn defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else { return };
    let list_empty = spec["podCIDRs"].as_array().is_none_or(Vec::is_empty);
    let single = spec["podCIDR"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    match (list_empty, single) {
        (true, Some(one)) => spec["podCIDRs"] = json!([one]),
        (false, _) => {
            if let Some(first) = spec["podCIDRs"].get(0).cloned().filter(Value::is_string) {
                spec["podCIDR"] = first;
            }
        }
        (true, None) => {}
    }
}

fn cidrs(spec: &Value) -> Vec<String> {
    spec["podCIDRs"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default()
}

/// Go's `%v` of a []string, as kube's field errors print one.
fn go_list(list: &[String]) -> String {
    let quoted: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

fn validate(obj: &Value, old: Option<&Value>) -> Vec<Problem> {
    let mut out = Vec::new();
    let list = cidrs(&obj["spec"]);
    let mut families = Vec::new();
    for (i, c) in list.iter().enumerate() {
        match c.parse::<ipnet::IpNet>() {
            Ok(net) => families.push(matches!(net, ipnet::IpNet::V4(_))),
            Err(_) => out.push((
                format!("spec.podCIDRs[{i}]"),
                format!("Invalid value: {c:?}: must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"),
            )),
        }
    }
    let dual = families.len() == 2 && families[0] != families[1];
    if list.len() > 1 && families.len() == list.len() && !dual {
        out.push((
            "spec.podCIDRs".into(),
            format!("Invalid value: {}: may specify no more than one CIDR for each IP family", go_list(&list)),
        ));
    }
    // The controller (or the node) may set a range on a node that has none; nobody may
    // change one, kube's words.
    if let Some(old) = old
        && let before = cidrs(&old["spec"])
        && !before.is_empty()
        && before != list
    {
        out.push((
            "spec.podCIDRs".into(),
            "Forbidden: node updates may not change podCIDR except from \"\" to valid".into(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(spec: Value) -> Value {
        let mut n = json!({"spec": spec});
        (NODE.defaults)(&mut n, "v1");
        n
    }

    #[test]
    fn pod_cidr_and_pod_cidrs_are_kept_as_one() {
        assert_eq!(defaulted(json!({"podCIDR": "10.244.1.0/24"}))["spec"]["podCIDRs"], json!(["10.244.1.0/24"]));
        assert_eq!(
            defaulted(json!({"podCIDR": "10.1.0.0/24", "podCIDRs": ["10.244.2.0/24"]}))["spec"]["podCIDR"],
            "10.244.2.0/24"
        );
        assert_eq!(defaulted(json!({})), json!({"spec": {}}));
        let mut bare = json!({"metadata": {}});
        (NODE.defaults)(&mut bare, "v1");
        assert_eq!(bare, json!({"metadata": {}}));
    }

    #[test]
    fn a_pod_cidr_is_a_cidr_one_per_family_and_fixed_once_set() {
        let bad = defaulted(json!({"podCIDRs": ["ten"]}));
        assert_eq!(
            validate(&bad, None),
            vec![(
                "spec.podCIDRs[0]".to_string(),
                "Invalid value: \"ten\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".to_string()
            )]
        );
        let two = defaulted(json!({"podCIDRs": ["10.0.0.0/24", "10.0.1.0/24"]}));
        assert_eq!(
            validate(&two, None)[0].1,
            "Invalid value: []string{\"10.0.0.0/24\", \"10.0.1.0/24\"}: may specify no more than one CIDR for each IP family"
        );
        assert!(validate(&defaulted(json!({"podCIDRs": ["10.0.0.0/24", "fd00::/64"]})), None).is_empty());

        let unset = defaulted(json!({}));
        let set = defaulted(json!({"podCIDR": "10.244.1.0/24"}));
        assert!(validate(&set, Some(&unset)).is_empty(), "from \"\" to valid");
        assert!(validate(&set, Some(&set)).is_empty());
        let moved = defaulted(json!({"podCIDR": "10.244.2.0/24"}));
        for after in [&moved, &unset] {
            assert_eq!(
                validate(after, Some(&set)),
                vec![(
                    "spec.podCIDRs".to_string(),
                    "Forbidden: node updates may not change podCIDR except from \"\" to valid".to_string()
                )]
            );
        }
    }
}
