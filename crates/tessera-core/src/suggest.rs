//! "Did you mean …?": the closest existing name to a name that does not exist.
//!
//! Used wherever a definition refers to something by name — an audience, a
//! destination, a computed trait, an event, a trait or a property — so a typo is
//! answered with the name that was probably meant. Distances come from `strsim`
//! (optimal string alignment: Levenshtein with transpositions), compared without
//! case, so `Order Complted`, `order completed` and `Order Compelted` all find
//! `Order Completed`.

/// The candidate closest to `name`, when one is close enough to be a likely typo:
/// at most a third of the longer name's characters differ (at least one edit is
/// always allowed), or one of them is the other with different case. Ties go to the
/// candidate first in lexicographic order, so the answer is stable. `name` itself,
/// if among the candidates, is never suggested.
pub fn closest<'a, I, S>(name: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a S>,
    S: AsRef<str> + ?Sized + 'a,
{
    let wanted = name.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let candidate = candidate.as_ref();
        if candidate == name || candidate.is_empty() {
            continue;
        }
        let lower = candidate.to_lowercase();
        let distance = strsim::osa_distance(&wanted, &lower);
        let longest = wanted.chars().count().max(lower.chars().count());
        if distance > (longest / 3).max(1) {
            continue;
        }
        let better = match best {
            None => true,
            Some((d, c)) => distance < d || (distance == d && candidate < c),
        };
        if better {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c.to_owned())
}

/// `"; did you mean `x`?"` when [`closest`] finds one, else an empty string: to
/// append to an error or warning message.
pub fn did_you_mean<'a, I, S>(name: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a S>,
    S: AsRef<str> + ?Sized + 'a,
{
    closest(name, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_name_meant() {
        let names = ["total_orders", "total_revenue", "last_seen_at"];
        assert_eq!(
            closest("total_order", names.iter().copied()).as_deref(),
            Some("total_orders")
        );
        let events = ["Order Completed", "Product Added", "Page Viewed"];
        assert_eq!(
            closest("Order Complted", events.iter().copied()).as_deref(),
            Some("Order Completed")
        );
        assert_eq!(
            closest("order completed", events.iter().copied()).as_deref(),
            Some("Order Completed")
        );
        assert_eq!(
            closest("Order Compelted", events.iter().copied()).as_deref(),
            Some("Order Completed")
        );
        let audiences = vec!["cart-abandoners".to_string(), "vip".to_string()];
        assert_eq!(
            closest("cart-abandonerz", &audiences).as_deref(),
            Some("cart-abandoners")
        );
    }

    #[test]
    fn unrelated_names_find_nothing() {
        let names = ["total_orders", "vip"];
        assert_eq!(closest("country", names.iter().copied()), None);
        assert_eq!(closest("x", names.iter().copied()), None);
        assert_eq!(closest("vip", names.iter().copied()), None);
        assert_eq!(did_you_mean("country", names.iter().copied()), "");
    }

    #[test]
    fn short_names_allow_one_edit_and_ties_are_stable() {
        let names = ["vop", "vap"];
        assert_eq!(
            closest("vip", names.iter().copied()).as_deref(),
            Some("vap")
        );
        assert_eq!(
            did_you_mean("vip", names.iter().copied()),
            "; did you mean `vap`?"
        );
    }
}
