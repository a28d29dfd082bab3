//! Dependency closure over Depends + Pre-Depends for one architecture (plus `all`).
//!
//! The resolver is greedy and deterministic, in the order apt's own choices would mostly go:
//! roots first, then breadth-first, so error chains are short. For each relation it prefers
//! what is already selected or requested, then the first satisfiable alternative; for each
//! name the highest version over all suites. When a later relation needs a different version
//! of an already selected package, resolution restarts with that name pinned to the
//! intersection of its constraints, so no stale choice survives in the closure.
//!
//! Recommends are ignored on purpose: the image is minimal and every package is listed by name.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

use super::index::{ArchQualifier, Dependency, MultiArch, Package, Relation};
use super::version::{Constraint, Op, Version};

/// All packages of one suite (every component concatenated).
#[derive(Clone, Debug)]
pub struct SuiteIndex {
    pub suite: String,
    pub packages: Vec<Package>,
}

#[derive(Clone, Debug)]
pub struct ResolveRequest<'r> {
    pub arch: &'r str,
    /// Root entries: `name` or `name=version`.
    pub include: &'r [String],
    /// Names that are never installed.
    pub exclude: &'r [String],
}

/// One package of the closure.
#[derive(Clone, Debug)]
pub struct Resolved<'a> {
    pub package: &'a Package,
    pub suite: &'a str,
    /// The package whose relation pulled this one in; `None` for roots.
    pub needed_by: Option<String>,
}

/// A relation that only an excluded package could have satisfied.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cut {
    pub by: String,
    pub relation: String,
}

/// A virtual package with several possible providers where none was preferred, so the
/// resolver took the first by name. Recorded so reviewers see (and can override) it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProviderChoice {
    pub relation: String,
    pub needed_by: String,
    pub chosen: String,
    pub candidates: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Resolution<'a> {
    /// Sorted by package name.
    pub packages: Vec<Resolved<'a>>,
    /// Every excluded name, with what excluding it cut (possibly nothing).
    pub cuts: BTreeMap<String, Vec<Cut>>,
    pub choices: Vec<ProviderChoice>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConflictReport {
    pub package: String,
    pub field: &'static str,
    pub relation: String,
    pub other: String,
    pub package_chain: String,
    pub other_chain: String,
}

impl fmt::Display for ConflictReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} — but {} is selected too (via {}; {} via {})",
            self.package,
            self.field,
            self.relation,
            self.other,
            self.other_chain,
            self.package,
            self.package_chain
        )
    }
}

fn format_conflicts(c: &[ConflictReport]) -> String {
    let mut s =
        String::from("the selected packages conflict; exclude one side or pin other versions:");
    for r in c {
        s.push_str("\n  ");
        s.push_str(&r.to_string());
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("requested package `{entry}`: {message}")]
    BadRoot { entry: String, message: String },
    #[error("`{name}` is both requested and excluded; remove it from one of the lists")]
    RootExcluded { name: String },
    #[error("cannot satisfy `{relation}` needed by {chain}: {detail}")]
    Unsatisfiable {
        chain: String,
        relation: String,
        detail: String,
    },
    #[error("no version of `{name}` satisfies every requirement: {requirements}; available: {available}")]
    VersionClash {
        name: String,
        requirements: String,
        available: String,
    },
    #[error("{}", format_conflicts(.0))]
    Conflicts(Vec<ConflictReport>),
    #[error("resolution did not settle after {0} version re-pins; this is a resolver bug, please report the package list")]
    TooManyRestarts(usize),
}

struct Cand<'a> {
    pkg: &'a Package,
    suite: usize,
}

struct Universe<'a> {
    suites: Vec<&'a str>,
    cands: Vec<Cand<'a>>,
    /// Name → candidates, highest version first, earlier suite first on ties.
    by_name: HashMap<&'a str, Vec<usize>>,
    /// Virtual name → (candidate, provided version), provider name order then version.
    providers: HashMap<&'a str, Vec<(usize, Option<&'a Version>)>>,
}

impl<'a> Universe<'a> {
    fn new(indices: &'a [SuiteIndex], arch: &str) -> Universe<'a> {
        let mut cands = Vec::new();
        for (si, idx) in indices.iter().enumerate() {
            for pkg in &idx.packages {
                if pkg.architecture == arch || pkg.architecture == "all" {
                    cands.push(Cand { pkg, suite: si });
                }
            }
        }
        let mut by_name: HashMap<&'a str, Vec<usize>> = HashMap::new();
        let mut providers: HashMap<&'a str, Vec<(usize, Option<&'a Version>)>> = HashMap::new();
        for (i, c) in cands.iter().enumerate() {
            by_name.entry(c.pkg.name.as_str()).or_default().push(i);
            for p in &c.pkg.provides {
                providers
                    .entry(p.name.as_str())
                    .or_default()
                    .push((i, p.version.as_ref()));
            }
        }
        let order = |a: usize, b: usize| {
            let (x, y) = (&cands[a], &cands[b]);
            x.pkg
                .name
                .cmp(&y.pkg.name)
                .then_with(|| y.pkg.version.cmp(&x.pkg.version))
                .then_with(|| x.suite.cmp(&y.suite))
                .then_with(|| a.cmp(&b))
        };
        for v in by_name.values_mut() {
            v.sort_by(|&a, &b| order(a, b));
        }
        for v in providers.values_mut() {
            v.sort_by(|a, b| order(a.0, b.0));
        }
        Universe {
            suites: indices.iter().map(|s| s.suite.as_str()).collect(),
            cands,
            by_name,
            providers,
        }
    }

    fn describe(&self, c: usize) -> String {
        let p = self.cands[c].pkg;
        format!("{} {}", p.name, p.version)
    }

    fn versions_of(&self, name: &str) -> String {
        match self.by_name.get(name) {
            None => "none".to_string(),
            Some(v) => v
                .iter()
                .map(|&c| {
                    format!(
                        "{} ({})",
                        self.cands[c].pkg.version, self.suites[self.cands[c].suite]
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

fn arch_ok(pkg: &Package, q: &Option<ArchQualifier>, arch: &str) -> bool {
    match q {
        None | Some(ArchQualifier::Native) => true,
        Some(ArchQualifier::Any) => pkg.multi_arch == MultiArch::Allowed,
        Some(ArchQualifier::Arch(a)) => a == arch,
    }
}

fn constraint_ok(c: &Option<Constraint>, v: &Version) -> bool {
    c.as_ref().is_none_or(|c| c.satisfied_by(v))
}

/// Versioned dependencies are only satisfied by versioned Provides (Policy 7.5).
fn provide_ok(dep: &Dependency, provided: Option<&Version>) -> bool {
    match (&dep.constraint, provided) {
        (None, _) => true,
        (Some(c), Some(v)) => c.satisfied_by(v),
        (Some(_), None) => false,
    }
}

struct Sel {
    cand: usize,
    parent: Option<String>,
}

enum Stop {
    Restart(String, Vec<Constraint>),
    Fail(ResolveError),
}

impl From<ResolveError> for Stop {
    fn from(e: ResolveError) -> Self {
        Stop::Fail(e)
    }
}

struct Run<'u, 'a> {
    u: &'u Universe<'a>,
    arch: &'u str,
    excluded: &'u BTreeSet<String>,
    requested: &'u HashSet<String>,
    pins: &'u BTreeMap<String, Vec<Constraint>>,
    selected: BTreeMap<&'a str, Sel>,
    queue: VecDeque<usize>,
    /// Virtual name → selected candidates providing it, with the provided version.
    provided: HashMap<&'a str, Vec<(usize, Option<&'a Version>)>>,
    /// Name → (selected candidate, its Conflicts/Breaks entry naming it).
    against: HashMap<&'a str, Vec<(usize, &'a Dependency)>>,
    /// Constraints that selected packages satisfied, for re-pinning on a version clash.
    accepted: HashMap<&'a str, Vec<(Constraint, String)>>,
    cuts: BTreeMap<String, BTreeSet<Cut>>,
    choices: Vec<ProviderChoice>,
}

impl<'u, 'a> Run<'u, 'a> {
    fn chain(&self, name: Option<&str>) -> String {
        let mut parts = Vec::new();
        let mut cur = name.map(str::to_string);
        while let Some(n) = cur {
            if parts.len() > 10_000 {
                break;
            }
            cur = self.selected.get(n.as_str()).and_then(|s| s.parent.clone());
            parts.push(n);
        }
        if parts.is_empty() {
            return "the requested package list".to_string();
        }
        parts.reverse();
        parts.join(" -> ")
    }

    fn pinned_ok(&self, c: usize) -> bool {
        let p = self.u.cands[c].pkg;
        self.pins
            .get(p.name.as_str())
            .is_none_or(|cs| cs.iter().all(|c| c.satisfied_by(&p.version)))
    }

    /// Whether an alternative is already satisfied by the selection.
    fn satisfied_now(&self, dep: &Dependency) -> Option<usize> {
        if let Some(s) = self.selected.get(dep.name.as_str()) {
            let p = self.u.cands[s.cand].pkg;
            if constraint_ok(&dep.constraint, &p.version) && arch_ok(p, &dep.arch, self.arch) {
                return Some(s.cand);
            }
        }
        if matches!(&dep.arch, Some(ArchQualifier::Arch(a)) if a != self.arch) {
            return None;
        }
        self.provided
            .get(dep.name.as_str())?
            .iter()
            .find(|(_, v)| provide_ok(dep, *v))
            .map(|(c, _)| *c)
    }

    fn matches_conflict(&self, dep: &Dependency, target: usize, by: usize) -> bool {
        let t = self.u.cands[target].pkg;
        if target == by || t.name == self.u.cands[by].pkg.name {
            return false;
        }
        if t.name == dep.name && constraint_ok(&dep.constraint, &t.version) {
            return true;
        }
        t.provides
            .iter()
            .any(|p| p.name == dep.name && provide_ok(dep, p.version.as_ref()))
    }

    /// The first selected package that `c` would conflict with (either direction).
    fn conflict_with_selection(&self, c: usize) -> Option<usize> {
        let p = self.u.cands[c].pkg;
        for dep in p
            .conflicts
            .iter()
            .chain(&p.breaks)
            .flat_map(|r| &r.alternatives)
        {
            if let Some(s) = self.selected.get(dep.name.as_str()) {
                if self.matches_conflict(dep, s.cand, c) {
                    return Some(s.cand);
                }
            }
            if let Some(ps) = self.provided.get(dep.name.as_str()) {
                if let Some((s, _)) = ps.iter().find(|(s, _)| self.matches_conflict(dep, *s, c)) {
                    return Some(*s);
                }
            }
        }
        let names =
            std::iter::once(p.name.as_str()).chain(p.provides.iter().map(|x| x.name.as_str()));
        for n in names {
            for (by, dep) in self.against.get(n).into_iter().flatten() {
                if self.matches_conflict(dep, c, *by) {
                    return Some(*by);
                }
            }
        }
        None
    }

    fn select(&mut self, c: usize, parent: Option<&str>) {
        let p = self.u.cands[c].pkg;
        self.selected.insert(
            p.name.as_str(),
            Sel {
                cand: c,
                parent: parent.map(str::to_string),
            },
        );
        for pr in &p.provides {
            self.provided
                .entry(pr.name.as_str())
                .or_default()
                .push((c, pr.version.as_ref()));
        }
        for dep in p
            .conflicts
            .iter()
            .chain(&p.breaks)
            .flat_map(|r| &r.alternatives)
        {
            self.against
                .entry(dep.name.as_str())
                .or_default()
                .push((c, dep));
        }
        self.queue.push_back(c);
    }

    fn accept(&mut self, dep: &Dependency, c: usize, by: &str) {
        if let Some(con) = &dep.constraint {
            if self.u.cands[c].pkg.name == dep.name {
                self.accepted
                    .entry(self.u.cands[c].pkg.name.as_str())
                    .or_default()
                    .push((con.clone(), by.to_string()));
            }
        }
    }

    /// Real candidates for `dep`, best first, excluding excluded and pinned-out ones.
    fn real_options(&self, dep: &Dependency) -> Vec<usize> {
        if self.excluded.contains(&dep.name) {
            return Vec::new();
        }
        self.u
            .by_name
            .get(dep.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|&c| {
                let p = self.u.cands[c].pkg;
                constraint_ok(&dep.constraint, &p.version)
                    && arch_ok(p, &dep.arch, self.arch)
                    && self.pinned_ok(c)
            })
            .collect()
    }

    /// Providers of `dep` grouped by provider name (name order), best version first, minus
    /// excluded names and names already selected at another version.
    fn provider_options(&self, dep: &Dependency) -> Vec<Vec<usize>> {
        if matches!(&dep.arch, Some(ArchQualifier::Arch(a)) if a != self.arch) {
            return Vec::new();
        }
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for &(c, v) in self
            .u
            .providers
            .get(dep.name.as_str())
            .into_iter()
            .flatten()
        {
            let p = self.u.cands[c].pkg;
            if !provide_ok(dep, v) || self.excluded.contains(&p.name) || !self.pinned_ok(c) {
                continue;
            }
            if self
                .selected
                .get(p.name.as_str())
                .is_some_and(|s| s.cand != c)
            {
                continue;
            }
            match groups.last_mut() {
                Some(g) if self.u.cands[g[0]].pkg.name == p.name => g.push(c),
                _ => groups.push(vec![c]),
            }
        }
        groups
    }

    /// Excluded package names that would have satisfied `dep`.
    fn excluded_hits(&self, dep: &Dependency) -> Vec<String> {
        let mut hits = BTreeSet::new();
        if self.excluded.contains(&dep.name) {
            hits.insert(dep.name.clone());
        }
        for &(c, v) in self
            .u
            .providers
            .get(dep.name.as_str())
            .into_iter()
            .flatten()
        {
            let p = self.u.cands[c].pkg;
            if self.excluded.contains(&p.name) && provide_ok(dep, v) {
                hits.insert(p.name.clone());
            }
        }
        hits.into_iter().collect()
    }

    fn why_not(&self, dep: &Dependency) -> String {
        if self.excluded.contains(&dep.name) {
            return format!("`{}` is excluded", dep.name);
        }
        let mut why = Vec::new();
        if let Some(cs) = self.u.by_name.get(dep.name.as_str()) {
            if let Some(ArchQualifier::Any) = dep.arch {
                if cs
                    .iter()
                    .all(|&c| self.u.cands[c].pkg.multi_arch != MultiArch::Allowed)
                {
                    why.push(format!(
                        "`{}:any` needs a Multi-Arch: allowed package",
                        dep.name
                    ));
                }
            }
            if let Some(s) = self.selected.get(dep.name.as_str()) {
                why.push(format!("{} is already selected", self.u.describe(s.cand)));
            }
            why.push(format!(
                "{} has {}",
                dep.name,
                self.u.versions_of(&dep.name)
            ));
            if let Some(pins) = self.pins.get(dep.name.as_str()) {
                let p: Vec<String> = pins.iter().map(|c| format!("({c})")).collect();
                why.push(format!("pinned to {}", p.join(" ")));
            }
        }
        match self.u.providers.get(dep.name.as_str()) {
            Some(ps) => {
                let names: BTreeSet<String> = ps
                    .iter()
                    .map(|&(c, v)| match v {
                        Some(v) => format!("{} (= {v})", self.u.cands[c].pkg.name),
                        None => self.u.cands[c].pkg.name.clone(),
                    })
                    .collect();
                let mut s = format!(
                    "provided by {}",
                    names.into_iter().collect::<Vec<_>>().join(", ")
                );
                if dep.constraint.is_some() {
                    s.push_str(" (an unversioned Provides cannot satisfy a versioned dependency)");
                }
                why.push(s);
            }
            None if why.is_empty() => {
                why.push(format!("`{}` is in no index of any suite", dep.name))
            }
            None => {}
        }
        why.join("; ")
    }

    /// Satisfies one relation of `by` (or a root when `by` is `None`).
    fn satisfy(&mut self, rel: &'a Relation, by: Option<&str>) -> Result<(), Stop> {
        let by_name = by.unwrap_or("(requested)").to_string();
        for dep in &rel.alternatives {
            if let Some(c) = self.satisfied_now(dep) {
                self.accept(dep, c, &by_name);
                return Ok(());
            }
        }
        // Requested names win over earlier alternatives.
        let mut order: Vec<&'a Dependency> = rel.alternatives.iter().collect();
        order.sort_by_key(|d| !self.requested.contains(&d.name));

        let mut fallback: Option<(&'a Dependency, usize, Option<ProviderChoice>)> = None;
        for dep in &order {
            let dep: &'a Dependency = dep;
            let real: Vec<usize> = self
                .real_options(dep)
                .into_iter()
                .filter(|&c| {
                    !self
                        .selected
                        .contains_key(self.u.cands[c].pkg.name.as_str())
                })
                .collect();
            let mut picks: Vec<(usize, Option<ProviderChoice>)> =
                real.into_iter().map(|c| (c, None)).collect();
            // apt prefers a real package of that name; providers are only looked at without one.
            if picks.is_empty() {
                let groups = self.provider_options(dep);
                let names: Vec<String> = groups
                    .iter()
                    .map(|g| self.u.cands[g[0]].pkg.name.clone())
                    .collect();
                for g in &groups {
                    for &c in g {
                        let choice = (groups.len() > 1).then(|| ProviderChoice {
                            relation: rel.to_string(),
                            needed_by: by_name.clone(),
                            chosen: self.u.cands[c].pkg.name.clone(),
                            candidates: names.clone(),
                        });
                        picks.push((c, choice));
                    }
                }
            }
            for (c, choice) in picks {
                if self.conflict_with_selection(c).is_none() {
                    return self.take(dep, c, choice, by, &by_name);
                }
                if fallback.is_none() {
                    fallback = Some((dep, c, choice));
                }
            }
        }
        if let Some((dep, c, choice)) = fallback {
            // Every option conflicts; take the preferred one so the conflict check names it.
            return self.take(dep, c, choice, by, &by_name);
        }

        // A clash with an already selected version: re-pin if some version fits everything.
        for dep in &rel.alternatives {
            let Some(con) = &dep.constraint else { continue };
            if !self.selected.contains_key(dep.name.as_str()) || self.excluded.contains(&dep.name) {
                continue;
            }
            let mut wanted: Vec<Constraint> = self
                .pins
                .get(dep.name.as_str())
                .cloned()
                .unwrap_or_default();
            let mut reasons: Vec<String> = Vec::new();
            for (c, who) in self.accepted.get(dep.name.as_str()).into_iter().flatten() {
                wanted.push(c.clone());
                reasons.push(format!("({c}) for {}", self.chain(Some(who))));
            }
            wanted.push(con.clone());
            reasons.push(format!("({con}) for {}", self.chain(by)));
            let fits = self
                .u
                .by_name
                .get(dep.name.as_str())
                .into_iter()
                .flatten()
                .any(|&c| {
                    let p = self.u.cands[c].pkg;
                    wanted.iter().all(|w| w.satisfied_by(&p.version))
                        && arch_ok(p, &dep.arch, self.arch)
                });
            if fits {
                return Err(Stop::Restart(dep.name.clone(), wanted));
            }
            if rel.alternatives.len() == 1 {
                return Err(Stop::Fail(ResolveError::VersionClash {
                    name: dep.name.clone(),
                    requirements: reasons.join(", "),
                    available: self.u.versions_of(&dep.name),
                }));
            }
        }

        let mut hits = BTreeSet::new();
        for dep in &rel.alternatives {
            hits.extend(self.excluded_hits(dep));
        }
        if !hits.is_empty() {
            for h in hits {
                self.cuts.entry(h).or_default().insert(Cut {
                    by: by_name.clone(),
                    relation: rel.to_string(),
                });
            }
            return Ok(());
        }
        let detail = rel
            .alternatives
            .iter()
            .map(|d| self.why_not(d))
            .collect::<Vec<_>>()
            .join(" | ");
        Err(Stop::Fail(ResolveError::Unsatisfiable {
            chain: self.chain(by),
            relation: rel.to_string(),
            detail,
        }))
    }

    fn take(
        &mut self,
        dep: &'a Dependency,
        c: usize,
        choice: Option<ProviderChoice>,
        by: Option<&str>,
        by_name: &str,
    ) -> Result<(), Stop> {
        if let Some(ch) = choice {
            self.choices.push(ch);
        }
        self.select(c, by);
        self.accept(dep, c, by_name);
        Ok(())
    }

    fn final_conflicts(&self) -> Vec<ConflictReport> {
        let mut out = BTreeSet::new();
        for sel in self.selected.values() {
            let p = self.u.cands[sel.cand].pkg;
            let fields = [("Conflicts", &p.conflicts), ("Breaks", &p.breaks)];
            for (field, rels) in fields {
                for dep in rels.iter().flat_map(|r| &r.alternatives) {
                    let mut targets: Vec<usize> = Vec::new();
                    if let Some(s) = self.selected.get(dep.name.as_str()) {
                        targets.push(s.cand);
                    }
                    for (s, _) in self.provided.get(dep.name.as_str()).into_iter().flatten() {
                        targets.push(*s);
                    }
                    for t in targets {
                        if self.matches_conflict(dep, t, sel.cand) {
                            let other = self.u.cands[t].pkg.name.as_str();
                            out.insert(ConflictReport {
                                package: self.u.describe(sel.cand),
                                field,
                                relation: dep.to_string(),
                                other: self.u.describe(t),
                                package_chain: self.chain(Some(&p.name)),
                                other_chain: self.chain(Some(other)),
                            });
                        }
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

/// Parses a root entry: `name` or `name=version`.
fn parse_root(entry: &str) -> Result<Relation, ResolveError> {
    let bad = |message: String| ResolveError::BadRoot {
        entry: entry.to_string(),
        message,
    };
    let (name, version) = match entry.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (entry.trim(), None),
    };
    let constraint = match version {
        Some(v) => Some(Constraint {
            op: Op::Eq,
            version: Version::parse(v).map_err(|e| bad(e.to_string()))?,
        }),
        None => None,
    };
    let rel = super::index::parse_relations(name, "any").map_err(|e| bad(e.to_string()))?;
    match rel.as_slice() {
        [r] if r.alternatives.len() == 1 && r.alternatives[0].constraint.is_none() => {
            let mut dep = r.alternatives[0].clone();
            dep.constraint = constraint;
            Ok(Relation {
                alternatives: vec![dep],
            })
        }
        _ => Err(bad("expected `name` or `name=version`".to_string())),
    }
}

/// Computes the closure of `req.include` over Depends and Pre-Depends.
pub fn resolve<'a>(
    indices: &'a [SuiteIndex],
    req: &ResolveRequest<'_>,
) -> Result<Resolution<'a>, ResolveError> {
    let u = Universe::new(indices, req.arch);
    let roots: Vec<Relation> = req
        .include
        .iter()
        .map(|e| parse_root(e))
        .collect::<Result<_, _>>()?;
    let excluded: BTreeSet<String> = req.exclude.iter().map(|s| s.trim().to_string()).collect();
    let requested: HashSet<String> = roots
        .iter()
        .map(|r| r.alternatives[0].name.clone())
        .collect();
    for r in &roots {
        let n = &r.alternatives[0].name;
        if excluded.contains(n) {
            return Err(ResolveError::RootExcluded { name: n.clone() });
        }
    }
    let mut pins: BTreeMap<String, Vec<Constraint>> = BTreeMap::new();
    for r in &roots {
        let d = &r.alternatives[0];
        if let Some(c) = &d.constraint {
            pins.entry(d.name.clone()).or_default().push(c.clone());
        }
    }
    const MAX_RESTARTS: usize = 200;
    for _ in 0..MAX_RESTARTS {
        let mut run = Run {
            u: &u,
            arch: req.arch,
            excluded: &excluded,
            requested: &requested,
            pins: &pins,
            selected: BTreeMap::new(),
            queue: VecDeque::new(),
            provided: HashMap::new(),
            against: HashMap::new(),
            accepted: HashMap::new(),
            cuts: BTreeMap::new(),
            choices: Vec::new(),
        };
        match closure(&mut run, &roots) {
            Ok(()) => {}
            Err(Stop::Restart(name, constraints)) => {
                pins.insert(name, constraints);
                continue;
            }
            Err(Stop::Fail(e)) => return Err(e),
        }
        let conflicts = run.final_conflicts();
        if !conflicts.is_empty() {
            return Err(ResolveError::Conflicts(conflicts));
        }
        let packages = run
            .selected
            .values()
            .map(|s| Resolved {
                package: u.cands[s.cand].pkg,
                suite: u.suites[u.cands[s.cand].suite],
                needed_by: s.parent.clone(),
            })
            .collect();
        let mut cuts: BTreeMap<String, Vec<Cut>> =
            excluded.iter().map(|e| (e.clone(), Vec::new())).collect();
        for (k, v) in run.cuts {
            cuts.entry(k).or_default().extend(v);
        }
        let mut choices = run.choices;
        choices.sort();
        choices.dedup();
        return Ok(Resolution {
            packages,
            cuts,
            choices,
        });
    }
    Err(ResolveError::TooManyRestarts(MAX_RESTARTS))
}

fn closure<'a>(run: &mut Run<'_, 'a>, roots: &'a [Relation]) -> Result<(), Stop> {
    for r in roots {
        run.satisfy(r, None)?;
    }
    while let Some(c) = run.queue.pop_front() {
        let p: &'a Package = run.u.cands[c].pkg;
        for rel in p.pre_depends.iter().chain(&p.depends) {
            run.satisfy(rel, Some(&p.name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apt::lock::index::parse_packages;

    /// Builds a suite from compact stanzas; Filename/Size/SHA256 are filled in.
    pub(crate) fn suite(name: &str, stanzas: &str) -> SuiteIndex {
        let mut text = String::new();
        for (i, st) in stanzas
            .split("\n\n")
            .filter(|s| !s.trim().is_empty())
            .enumerate()
        {
            text.push_str(st.trim());
            if !st.contains("Architecture:") {
                text.push_str("\nArchitecture: amd64");
            }
            text.push_str(&format!(
                "\nFilename: pool/main/x/{name}-{i}.deb\nSize: {}\nSHA256: {:064x}\n\n",
                100 + i,
                i + 1
            ));
        }
        SuiteIndex {
            suite: name.to_string(),
            packages: parse_packages(&text, name, "amd64").unwrap(),
        }
    }

    fn run(
        indices: &[SuiteIndex],
        include: &[&str],
        exclude: &[&str],
    ) -> Result<Vec<String>, ResolveError> {
        let include: Vec<String> = include.iter().map(|s| s.to_string()).collect();
        let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        let r = resolve(
            indices,
            &ResolveRequest {
                arch: "amd64",
                include: &include,
                exclude: &exclude,
            },
        )?;
        Ok(r.packages
            .iter()
            .map(|p| format!("{}={}@{}", p.package.name, p.package.version, p.suite))
            .collect())
    }

    fn full<'a>(indices: &'a [SuiteIndex], include: &[&str], exclude: &[&str]) -> Resolution<'a> {
        let include: Vec<String> = include.iter().map(|s| s.to_string()).collect();
        let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        resolve(
            indices,
            &ResolveRequest {
                arch: "amd64",
                include: &include,
                exclude: &exclude,
            },
        )
        .unwrap()
    }

    #[test]
    fn simple_closure_with_pre_depends_and_arch_all() {
        let s = [suite(
            "main",
            "Package: app\nVersion: 1\nDepends: libc6 (>= 2.30), helper\nPre-Depends: dpkg\nRecommends: bloat\n\n\
             Package: libc6\nVersion: 2.36-9\n\n\
             Package: helper\nVersion: 1\nArchitecture: all\nDepends: libc6\n\n\
             Package: dpkg\nVersion: 1.21\n\n\
             Package: bloat\nVersion: 1\n\n\
             Package: unrelated\nVersion: 1\nArchitecture: i386",
        )];
        assert_eq!(
            run(&s, &["app"], &[]).unwrap(),
            [
                "app=1@main",
                "dpkg=1.21@main",
                "helper=1@main",
                "libc6=2.36-9@main"
            ]
        );
    }

    #[test]
    fn alternatives_prefer_selected_then_requested_then_first() {
        let s = [suite(
            "main",
            "Package: a\nVersion: 1\nDepends: x | y\n\n\
             Package: b\nVersion: 1\nDepends: y | x\n\n\
             Package: x\nVersion: 1\n\n\
             Package: y\nVersion: 1",
        )];
        // First satisfiable alternative, then b reuses the selected x.
        assert_eq!(
            run(&s, &["a", "b"], &[]).unwrap(),
            ["a=1@main", "b=1@main", "x=1@main"]
        );
        // A requested package wins even when it is not the first alternative.
        assert_eq!(run(&s, &["a", "y"], &[]).unwrap(), ["a=1@main", "y=1@main"]);
        // Unsatisfiable first alternative falls through.
        let s2 = [suite(
            "main",
            "Package: a\nVersion: 1\nDepends: missing | z (>= 2) | y\n\n\
             Package: z\nVersion: 1\n\n\
             Package: y\nVersion: 1",
        )];
        assert_eq!(run(&s2, &["a"], &[]).unwrap(), ["a=1@main", "y=1@main"]);
    }

    #[test]
    fn virtual_packages_versioned_and_unversioned_provides() {
        let s = [suite(
            "main",
            "Package: app\nVersion: 1\nDepends: awk, libapi (>= 2)\n\n\
             Package: mawk\nVersion: 1.3\nProvides: awk\n\n\
             Package: gawk\nVersion: 5\nProvides: awk\n\n\
             Package: api-old\nVersion: 1\nProvides: libapi\n\n\
             Package: api-new\nVersion: 3\nProvides: libapi (= 2.5)\n\n\
             Package: api-older\nVersion: 1\nProvides: libapi (= 1.0)",
        )];
        let r = full(&s, &["app"], &[]);
        let names: Vec<&str> = r.packages.iter().map(|p| p.package.name.as_str()).collect();
        // Unversioned Provides (api-old) cannot satisfy `libapi (>= 2)`; only api-new can.
        assert_eq!(names, ["api-new", "app", "gawk"]);
        // Several awk providers and none preferred: first by name, recorded.
        assert_eq!(
            r.choices,
            [ProviderChoice {
                relation: "awk".into(),
                needed_by: "app".into(),
                chosen: "gawk".into(),
                candidates: vec!["gawk".into(), "mawk".into()],
            }]
        );
        // A requested provider is preferred and no choice is recorded.
        let r = full(&s, &["mawk", "app"], &[]);
        let names: Vec<&str> = r.packages.iter().map(|p| p.package.name.as_str()).collect();
        assert_eq!(names, ["api-new", "app", "mawk"]);
        assert!(r.choices.is_empty());
        // An unversioned dependency accepts unversioned and versioned provides alike.
        let s2 = [suite(
            "main",
            "Package: u\nVersion: 1\nDepends: libapi\n\n\
             Package: api-new\nVersion: 3\nProvides: libapi (= 2.5)",
        )];
        assert_eq!(
            run(&s2, &["u"], &[]).unwrap(),
            ["api-new=3@main", "u=1@main"]
        );
    }

    #[test]
    fn real_package_beats_provider() {
        let s = [suite(
            "main",
            "Package: app\nVersion: 1\nDepends: mail\n\n\
             Package: aaa-mail\nVersion: 1\nProvides: mail\n\n\
             Package: mail\nVersion: 1",
        )];
        assert_eq!(
            run(&s, &["app"], &[]).unwrap(),
            ["app=1@main", "mail=1@main"]
        );
    }

    #[test]
    fn version_constraints_all_operators() {
        let s = [suite(
            "main",
            "Package: lt\nVersion: 1\nDepends: p (<< 2)\n\n\
             Package: le\nVersion: 1\nDepends: q (<= 2)\n\n\
             Package: eq\nVersion: 1\nDepends: r (= 2)\n\n\
             Package: ge\nVersion: 1\nDepends: s (>= 2)\n\n\
             Package: gt\nVersion: 1\nDepends: t (>> 2)\n\n\
             Package: p\nVersion: 1\n\nPackage: p\nVersion: 2\n\n\
             Package: q\nVersion: 2\n\nPackage: q\nVersion: 3\n\n\
             Package: r\nVersion: 1\n\nPackage: r\nVersion: 2\n\nPackage: r\nVersion: 3\n\n\
             Package: s\nVersion: 1\n\nPackage: s\nVersion: 2~rc1\n\nPackage: s\nVersion: 2\n\n\
             Package: t\nVersion: 2\n\nPackage: t\nVersion: 2.1",
        )];
        assert_eq!(run(&s, &["lt"], &[]).unwrap(), ["lt=1@main", "p=1@main"]);
        assert_eq!(run(&s, &["le"], &[]).unwrap(), ["le=1@main", "q=2@main"]);
        assert_eq!(run(&s, &["eq"], &[]).unwrap(), ["eq=1@main", "r=2@main"]);
        assert_eq!(run(&s, &["ge"], &[]).unwrap(), ["ge=1@main", "s=2@main"]);
        assert_eq!(run(&s, &["gt"], &[]).unwrap(), ["gt=1@main", "t=2.1@main"]);
        // Without a constraint the highest version wins; `name=version` pins.
        assert_eq!(run(&s, &["r"], &[]).unwrap(), ["r=3@main"]);
        assert_eq!(run(&s, &["r=1"], &[]).unwrap(), ["r=1@main"]);
        let e = run(&s, &["r=9"], &[]).unwrap_err().to_string();
        assert!(
            e.contains("r (= 9)") && e.contains("r has 3 (main), 2 (main), 1 (main)"),
            "{e}"
        );
        assert!(run(&s, &["r=bad_version"], &[]).is_err());
    }

    #[test]
    fn later_constraint_repins_an_earlier_choice() {
        let s = [suite(
            "main",
            "Package: a\nVersion: 1\nDepends: lib\n\n\
             Package: b\nVersion: 1\nDepends: lib (<< 2)\n\n\
             Package: lib\nVersion: 1\nDepends: old-dep\n\n\
             Package: lib\nVersion: 2\nDepends: new-dep\n\n\
             Package: old-dep\nVersion: 1\n\n\
             Package: new-dep\nVersion: 1",
        )];
        // lib 2 was picked first, but b needs << 2: the closure must not keep new-dep.
        assert_eq!(
            run(&s, &["a", "b"], &[]).unwrap(),
            ["a=1@main", "b=1@main", "lib=1@main", "old-dep=1@main"]
        );
        let s2 = [suite(
            "main",
            "Package: a\nVersion: 1\nDepends: lib (>= 2)\n\n\
             Package: b\nVersion: 1\nDepends: lib (<< 2)\n\n\
             Package: lib\nVersion: 1\n\nPackage: lib\nVersion: 2",
        )];
        let e = run(&s2, &["a", "b"], &[]).unwrap_err().to_string();
        assert!(
            e.contains("`lib`") && e.contains("(>= 2) for a") && e.contains("(<< 2) for b"),
            "{e}"
        );
    }

    #[test]
    fn multiple_suites_highest_version_wins() {
        let base = suite(
            "bookworm",
            "Package: app\nVersion: 1.0-1\nDepends: libssl3 (>= 3.0)\n\n\
             Package: libssl3\nVersion: 3.0.15-1~deb12u1\n\n\
             Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n\n\
             Package: same\nVersion: 1",
        );
        let updates = suite(
            "bookworm-updates",
            "Package: tzdata\nVersion: 2025b-0+deb12u1\nArchitecture: all\n\n\
             Package: same\nVersion: 1",
        );
        let security = suite(
            "bookworm-security",
            "Package: libssl3\nVersion: 3.0.17-1~deb12u2\n\n\
             Package: app\nVersion: 1.0-1+deb12u1\nDepends: libssl3 (>= 3.0)",
        );
        let all = [base, updates, security];
        assert_eq!(
            run(&all, &["app", "tzdata", "same"], &[]).unwrap(),
            [
                "app=1.0-1+deb12u1@bookworm-security",
                "libssl3=3.0.17-1~deb12u2@bookworm-security",
                "same=1@bookworm",
                "tzdata=2025b-0+deb12u1@bookworm-updates",
            ]
        );
        // An explicit older version is honoured and comes from the suite that has it.
        assert_eq!(
            run(&all, &["libssl3=3.0.15-1~deb12u1"], &[]).unwrap(),
            ["libssl3=3.0.15-1~deb12u1@bookworm"]
        );
    }

    #[test]
    fn exclusions_are_cut_and_recorded() {
        let s = [suite(
            "main",
            "Package: app\nVersion: 1\nDepends: systemd | sysvinit, libsystemd0, init-system\n\n\
             Package: systemd\nVersion: 252\nProvides: init-system\n\n\
             Package: libsystemd0\nVersion: 252\n\n\
             Package: other\nVersion: 1\nDepends: sysvinit",
        )];
        let r = full(&s, &["app"], &["systemd", "libsystemd0", "never-needed"]);
        let names: Vec<&str> = r.packages.iter().map(|p| p.package.name.as_str()).collect();
        assert_eq!(names, ["app"]);
        assert_eq!(
            r.cuts["systemd"],
            [
                Cut {
                    by: "app".into(),
                    relation: "init-system".into()
                },
                Cut {
                    by: "app".into(),
                    relation: "systemd | sysvinit".into()
                },
            ]
        );
        assert_eq!(
            r.cuts["libsystemd0"],
            [Cut {
                by: "app".into(),
                relation: "libsystemd0".into()
            }]
        );
        assert!(
            r.cuts["never-needed"].is_empty(),
            "unused exclusions are listed too"
        );
        // An alternative that is not excluded is used instead of cutting.
        let s2 = [suite(
            "main",
            "Package: app\nVersion: 1\nDepends: systemd | sysvinit\n\n\
             Package: systemd\nVersion: 252\n\n\
             Package: sysvinit\nVersion: 3",
        )];
        let r = full(&s2, &["app"], &["systemd"]);
        let names: Vec<&str> = r.packages.iter().map(|p| p.package.name.as_str()).collect();
        assert_eq!(names, ["app", "sysvinit"]);
        assert!(r.cuts["systemd"].is_empty());
        // Excluding a root is a contradiction.
        let e = run(&s2, &["app"], &["app"]).unwrap_err();
        assert!(matches!(e, ResolveError::RootExcluded { .. }), "{e}");
        // A dependency missing for other reasons is still an error, not a cut.
        let e = run(&s, &["other"], &["systemd"]).unwrap_err().to_string();
        assert!(e.contains("sysvinit"), "{e}");
    }

    #[test]
    fn conflicts_and_breaks_are_reported() {
        let s = [suite(
            "main",
            "Package: a\nVersion: 1\nDepends: b\n\n\
             Package: b\nVersion: 1\n\n\
             Package: c\nVersion: 1\nConflicts: b\n\n\
             Package: d\nVersion: 1\nBreaks: b (<< 2)\n\n\
             Package: e\nVersion: 1\nBreaks: b (<< 1)\n\n\
             Package: f\nVersion: 1\nProvides: mta\nConflicts: mta\n\n\
             Package: g\nVersion: 1\nProvides: mta\nConflicts: mta",
        )];
        let e = run(&s, &["a", "c"], &[]).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ResolveError::Conflicts(_)));
        assert!(
            msg.contains("c 1 Conflicts: b") && msg.contains("b 1 is selected"),
            "{msg}"
        );
        assert!(msg.contains("via a -> b"), "{msg}");
        let msg = run(&s, &["a", "d"], &[]).unwrap_err().to_string();
        assert!(msg.contains("d 1 Breaks: b (<< 2)"), "{msg}");
        // A Breaks whose version range misses the selected version is fine.
        assert!(run(&s, &["a", "e"], &[]).is_ok());
        // Self-conflict through a shared virtual name is the normal "one MTA" pattern.
        assert_eq!(run(&s, &["f"], &[]).unwrap(), ["f=1@main"]);
        let msg = run(&s, &["f", "g"], &[]).unwrap_err().to_string();
        assert!(
            msg.contains("f 1 Conflicts: mta") && msg.contains("g 1 is selected"),
            "{msg}"
        );
    }

    #[test]
    fn conflicting_alternative_is_skipped() {
        let s = [suite(
            "main",
            "Package: a\nVersion: 1\nDepends: x | y\n\n\
             Package: b\nVersion: 1\nConflicts: x\n\n\
             Package: x\nVersion: 1\n\n\
             Package: y\nVersion: 1",
        )];
        assert_eq!(
            run(&s, &["b", "a"], &[]).unwrap(),
            ["a=1@main", "b=1@main", "y=1@main"]
        );
    }

    #[test]
    fn unsatisfiable_chain_is_named() {
        let s = [suite(
            "main",
            "Package: top\nVersion: 1\nDepends: mid\n\n\
             Package: mid\nVersion: 1\nDepends: leaf (>= 2) | other\n\n\
             Package: leaf\nVersion: 1.5",
        )];
        let e = run(&s, &["top"], &[]).unwrap_err().to_string();
        assert!(e.contains("`leaf (>= 2) | other`"), "{e}");
        assert!(e.contains("needed by top -> mid"), "{e}");
        assert!(e.contains("leaf has 1.5 (main)"), "{e}");
        assert!(e.contains("`other` is in no index"), "{e}");
        let e = run(&s, &["nosuch"], &[]).unwrap_err().to_string();
        assert!(
            e.contains("requested package list") && e.contains("`nosuch`"),
            "{e}"
        );
    }

    #[test]
    fn arch_qualifiers_and_foreign_arch() {
        let s = [suite(
            "main",
            "Package: a\nVersion: 1\nDepends: perl:any, python3:native\n\n\
             Package: perl\nVersion: 5.36\nMulti-Arch: allowed\n\n\
             Package: python3\nVersion: 3.11\n\n\
             Package: b\nVersion: 1\nDepends: tool:any\n\n\
             Package: tool\nVersion: 1\n\n\
             Package: c\nVersion: 1\nDepends: lib\n\n\
             Package: lib\nVersion: 1\nArchitecture: arm64",
        )];
        assert_eq!(
            run(&s, &["a"], &[]).unwrap(),
            ["a=1@main", "perl=5.36@main", "python3=3.11@main"]
        );
        let e = run(&s, &["b"], &[]).unwrap_err().to_string();
        assert!(e.contains("Multi-Arch: allowed"), "{e}");
        // Other architectures are not candidates at all.
        assert!(run(&s, &["c"], &[]).is_err());
    }

    #[test]
    fn deterministic_regardless_of_input_order() {
        let forward = "Package: app\nVersion: 1\nDepends: v1, v2, z | y\n\n\
             Package: p1\nVersion: 1\nProvides: v1\n\n\
             Package: p2\nVersion: 1\nProvides: v1, v2\n\n\
             Package: p3\nVersion: 1\nProvides: v2\n\n\
             Package: y\nVersion: 1\n\nPackage: z\nVersion: 1";
        let stanzas: Vec<&str> = forward.split("\n\n").collect();
        let backward: String = stanzas
            .iter()
            .rev()
            .copied()
            .collect::<Vec<_>>()
            .join("\n\n");
        let a = [suite("main", forward)];
        let b = [suite("main", &backward)];
        let ra = full(&a, &["app"], &[]);
        let rb = full(&b, &["app"], &[]);
        let names = |r: &Resolution| {
            r.packages
                .iter()
                .map(|p| p.package.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&ra), names(&rb));
        assert_eq!(ra.choices, rb.choices);
        // v1: p1 before p2 by name; v2: p2 before p3 by name.
        assert_eq!(names(&ra), ["app", "p1", "p2", "z"].map(String::from));
    }
}
