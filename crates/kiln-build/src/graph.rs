//! The stage graph: which stage builds on which, and which stages a target
//! needs.
//!
//! Pure code: given the parsed Dockerfile and the global build arguments it
//! resolves every stage's base (`scratch`, an earlier stage, or an image
//! reference), the `COPY --from` / `RUN --mount=from=` edges, and the build
//! order for a target with the stages it does not need dropped, as BuildKit
//! does.

use std::collections::BTreeSet;

use kiln_dockerfile::ast::{Dockerfile, InstructionKind, Span};
use kiln_dockerfile::expand::{expand_word, Vars};
use kiln_dockerfile::mount::parse_mount;

use crate::BuildError;

/// Where a stage's filesystem starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference, after global-ARG expansion.
    Image(String),
}

/// Where `COPY --from` / `RUN --mount=from=` read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stage(usize),
    Image(String),
}

/// One stage, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageNode {
    pub index: usize,
    /// The `AS` name, lowercased.
    pub name: Option<String>,
    pub base: Base,
    pub platform: Option<String>,
    /// Stages this one reads from (base and `--from` edges).
    pub deps: BTreeSet<usize>,
    /// The stages of `deps` that a `--from` names (not only its base).
    pub from_deps: BTreeSet<usize>,
    /// Images (not stages) named by `--from`.
    pub image_sources: BTreeSet<String>,
}

/// The resolved graph and the build order for the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub stages: Vec<StageNode>,
    /// Index of the target stage.
    pub target: usize,
    /// Stages to build, each after everything it depends on; stages the
    /// target does not reach are absent.
    pub order: Vec<usize>,
}

impl Graph {
    /// Finds a stage by name (case-insensitive) or decimal index that is
    /// defined before `before`.
    pub fn lookup(&self, name: &str, before: usize) -> Option<usize> {
        lookup_stage(&self.stages, name, before)
    }

    /// The stage and the stages it is built `FROM`, transitively: the
    /// stages whose steps make up its image's layers.
    pub fn base_chain(&self, stage: usize) -> BTreeSet<usize> {
        let mut chain = BTreeSet::new();
        let mut at = Some(stage);
        while let Some(i) = at {
            if !chain.insert(i) {
                break;
            }
            at = match self.stages.get(i).map(|s| &s.base) {
                Some(Base::Stage(parent)) => Some(*parent),
                _ => None,
            };
        }
        chain
    }
}

fn lookup_stage(stages: &[StageNode], name: &str, before: usize) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    if let Some(found) = stages
        .iter()
        .take(before)
        .find(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return Some(found.index);
    }
    match name.parse::<usize>() {
        Ok(n) if n < before => Some(n),
        _ => None,
    }
}

fn expand(
    word: &str,
    vars: &dyn Vars,
    escape: char,
    what: &str,
    span: Span,
) -> Result<String, BuildError> {
    expand_word(word, vars, escape)
        .map(|e| e.value)
        .map_err(|e| BuildError::Instruction {
            line: span.line,
            column: span.column,
            message: format!("{what}: {}", e.message),
        })
}

/// Resolves the stage graph. `global` holds the global ARGs (declared before
/// the first FROM, with build-arg overrides) and the predefined platform ARGs.
pub fn resolve(
    df: &Dockerfile,
    global: &dyn Vars,
    target: Option<&str>,
) -> Result<Graph, BuildError> {
    let escape = df.directives.escape;
    let mut stages: Vec<StageNode> = Vec::new();
    for stage in df.stages() {
        let span = stage.from_instruction.span;
        let image = expand(&stage.from.image, global, escape, "FROM", span)?;
        if image.is_empty() {
            return Err(BuildError::Instruction {
                line: span.line,
                column: span.column,
                message: format!(
                    "FROM {} expands to an empty image name (is a build arg missing?)",
                    stage.from.image
                ),
            });
        }
        let platform = match &stage.from.platform {
            Some(p) => Some(expand(p, global, escape, "FROM --platform", span)?),
            None => None,
        };
        let mut deps = BTreeSet::new();
        let base = if image.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else if let Some(i) = stages
            .iter()
            .find(|s| s.name.as_deref() == Some(image.as_str()))
            .map(|s| s.index)
        {
            // Stage names are lowercased where they are defined, but `FROM`
            // matches them exactly as written (as Docker's builder does):
            // `FROM Base` is an image reference, never the stage `base`.
            deps.insert(i);
            Base::Stage(i)
        } else if let Some(stage) = stages
            .iter()
            .filter_map(|s| s.name.as_deref())
            .find(|n| n.eq_ignore_ascii_case(&image))
        {
            // Not a stage, and an image reference cannot hold capitals in
            // its repository part: fail here with the reason.
            return Err(BuildError::Instruction {
                line: span.line,
                column: span.column,
                message: format!(
                    "FROM {image}: invalid reference format: repository name must be lowercase (stage names are matched exactly; the stage is named `{stage}`)"
                ),
            });
        } else {
            Base::Image(image)
        };
        let mut image_sources = BTreeSet::new();
        let mut from_deps = BTreeSet::new();
        for ins in stage.instructions {
            let froms: Vec<String> = match &ins.kind {
                InstructionKind::Copy(c) => c.from.iter().cloned().collect(),
                InstructionKind::Run(r) => r
                    .mounts
                    .iter()
                    .filter_map(|m| {
                        let spec = expand_word(m, global, escape).ok()?.value;
                        parse_mount(&spec).ok()?.from
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for from in froms {
                let from = expand(&from, global, escape, "--from", ins.span)?;
                match lookup_stage(&stages, &from, stage.index) {
                    Some(i) => {
                        deps.insert(i);
                        from_deps.insert(i);
                    }
                    None => {
                        if from.parse::<usize>().is_ok() {
                            return Err(BuildError::Instruction {
                                line: ins.span.line,
                                column: ins.span.column,
                                message: format!(
                                    "--from={from}: stage index {from} is not defined before this stage"
                                ),
                            });
                        }
                        image_sources.insert(from);
                    }
                }
            }
        }
        stages.push(StageNode {
            index: stage.index,
            name: stage.from.name.clone(),
            base,
            platform,
            deps,
            from_deps,
            image_sources,
        });
    }
    let last = stages.len().checked_sub(1).ok_or(BuildError::NoStages)?;
    let target = match target {
        None => last,
        Some(t) => {
            let lower = t.to_ascii_lowercase();
            stages
                .iter()
                .find(|s| s.name.as_deref() == Some(lower.as_str()))
                .map(|s| s.index)
                .ok_or_else(|| BuildError::UnknownTarget {
                    target: t.to_string(),
                    known: stages.iter().filter_map(|s| s.name.clone()).collect(),
                })?
        }
    };
    // Dependencies always point at earlier stages, so ascending index order
    // of the reachable set is a valid build order.
    let mut needed = BTreeSet::new();
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if needed.insert(i) {
            if let Some(node) = stages.get(i) {
                stack.extend(node.deps.iter().copied());
            }
        }
    }
    Ok(Graph {
        order: needed.into_iter().collect(),
        stages,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoVars;
    impl Vars for NoVars {
        fn get(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn graph(text: &str) -> Result<Graph, BuildError> {
        let df = kiln_dockerfile::parse("Dockerfile", text).unwrap();
        resolve(&df, &NoVars, None)
    }

    #[test]
    fn from_matches_lowercased_stage_names_exactly() {
        let g = graph("FROM scratch AS Base\nFROM base AS Next\nFROM next\n").unwrap();
        assert_eq!(g.stages[1].base, Base::Stage(0));
        assert_eq!(g.stages[2].base, Base::Stage(1));
        assert_eq!(g.order, vec![0, 1, 2]);
    }

    #[test]
    fn from_with_capitals_is_not_a_stage() {
        let e = graph("FROM scratch AS base_stage\nFROM base_stage AS BUG_stage\nFROM BUG_stage\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3, column 1: FROM BUG_stage: invalid reference format: repository name must be lowercase (stage names are matched exactly; the stage is named `bug_stage`)"
        );
    }

    #[test]
    fn copy_from_stays_case_insensitive() {
        let g = graph("FROM scratch AS Build\nFROM scratch\nCOPY --from=BUILD /a /a\n").unwrap();
        assert_eq!(g.stages[1].deps, BTreeSet::from([0]));
        assert!(g.stages[1].image_sources.is_empty());
    }
}
