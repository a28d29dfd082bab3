//! "Did you mean" hints for the names people mistype in settings files (keys, docker
//! commands): the settings model and the policy's command list give the same hint.

/// Edit distance counting an adjacent swap as one edit (optimal string alignment), for "did
/// you mean" hints: "psuh" is one edit from "push", not two.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate within a small distance, if any.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1) + 1;
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_pick_the_nearest_key_and_reject_far_ones() {
        let keys = [
            "exposeDockerAPIOnTCP2375",
            "enhancedContainerIsolation",
            "linuxVM",
        ];
        assert_eq!(suggest("linuxVm", keys), Some("linuxVM"));
        assert_eq!(
            suggest("enhancedContainerIsolaton", keys),
            Some("enhancedContainerIsolation")
        );
        assert_eq!(suggest("kubernetes", keys), None);
        assert_eq!(edit_distance("psuh", "push"), 1);
        assert_eq!(edit_distance("push", "ps"), 2);
    }
}
