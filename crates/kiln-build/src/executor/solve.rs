//! The build entry point: arguments, the stage graph, base-image prefetch and the
//! scheduler that runs ready stages in parallel, then the image and its records.

use super::meta::put_record;
use super::*;

/// Builds the target stage of a Dockerfile into an image in the store.
pub fn build(req: &BuildRequest) -> Result<BuildOutput, BuildError> {
    let df = kiln_dockerfile::parse(&req.dockerfile_name, &req.dockerfile)?;
    let loc = Locator {
        file: &req.dockerfile_name,
        text: &req.dockerfile,
    };
    let escape = df.directives.escape;
    let predefined = platform_args(&req.platform, &req.build_platform);
    let mut consumed: BTreeSet<String> = BTreeSet::new();

    // Global ARGs: visible to FROM lines and as defaults for stage ARGs.
    let mut global: BTreeMap<String, String> = predefined.clone();
    let mut global_declared: BTreeMap<String, String> = BTreeMap::new();
    for ins in df.global_args() {
        if let InstructionKind::Arg(decls) = &ins.kind {
            for decl in decls {
                consumed.insert(decl.name.clone());
                let value = match req.build_args.get(&decl.name) {
                    Some(v) => Some(v.clone()),
                    None => match &decl.default {
                        Some(d) => Some(
                            expand_word(d, &MapVars(&global), escape)
                                .map_err(|e| loc.at(ins.span, format!("ARG: {}", e.message)))?
                                .value,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = value {
                    global.insert(decl.name.clone(), v.clone());
                    global_declared.insert(decl.name.clone(), v);
                }
            }
        }
    }

    let graph = graph::resolve(&df, &MapVars(&global), req.target.as_deref())
        .map_err(|e| loc.locate(Span { line: 1, column: 1 }, e))?;
    let lint_warnings = kiln_dockerfile::lint::lint_stages(&df, |i| graph.order.contains(&i));
    let stage_names: Vec<String> = df
        .stages()
        .iter()
        .map(|s| {
            s.from
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{}", s.index))
        })
        .collect();

    let started = Instant::now();
    std::fs::create_dir_all(&req.work_dir).map_err(|source| BuildError::Io {
        path: req.work_dir.clone(),
        source,
    })?;
    // Stage roots and RUN scratch dirs are made here: each starts in block
    // groups of its own.
    crate::placement::spread_subtrees(&req.work_dir);
    let stages = df.stages();
    let (isolation, roots) = decide_isolation(req, &graph, &stages)?;
    let shared = Shared {
        step_id: AtomicUsize::new(0),
        image_roots: Mutex::new(HashMap::new()),
        image_digests: Mutex::new(HashMap::new()),
        isolation: Mutex::new(isolation),
        resolved: Mutex::new(HashMap::new()),
        deferred: Mutex::new(Vec::new()),
        target_chain: graph.base_chain(graph.target),
        roots,
    };
    // Every image the needed stages name (for the platform each is pulled
    // for), pulled in the background while the first stages run.
    let mut prefetch: Vec<(String, Platform)> = graph
        .order
        .iter()
        .filter_map(|i| graph.stages.get(*i))
        .flat_map(|n| {
            let base = match &n.base {
                Base::Image(r) => {
                    let platform = match &n.platform {
                        Some(p) => parse_platform(p),
                        None => Some(req.platform.clone()),
                    };
                    platform.map(|p| (r.clone(), p))
                }
                _ => None,
            };
            base.into_iter().chain(
                n.image_sources
                    .iter()
                    .map(|r| (r.clone(), req.platform.clone())),
            )
        })
        .collect();
    prefetch.sort_by_key(|(r, p)| (r.clone(), platform_string(p)));
    prefetch.dedup_by_key(|(r, p)| (r.clone(), platform_string(p)));
    let wanted = match req.jobs {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let jobs = shared.roots.max_jobs(wanted).min(graph.order.len()).max(1);
    let schedule = Mutex::new(Schedule::default());
    let wake = Condvar::new();

    // Each worker takes the first stage (in build order) whose inputs are
    // all built, builds it, and publishes the result; independent stages
    // thus build at the same time, up to `jobs`.
    let worker = || loop {
        let (index, ready) = {
            let Ok(mut s) = schedule.lock() else { return };
            loop {
                if s.error.is_some() || s.started.len() == graph.order.len() {
                    return;
                }
                let next = graph.order.iter().copied().find(|i| {
                    !s.started.contains(i)
                        && graph
                            .stages
                            .get(*i)
                            .is_some_and(|n| n.deps.iter().all(|d| s.done.contains_key(d)))
                });
                if let Some(i) = next {
                    s.started.insert(i);
                    s.running += 1;
                    break (i, s.done.clone());
                }
                if s.running == 0 {
                    s.error = Some(BuildError::Cycle);
                    wake.notify_all();
                    return;
                }
                s = match wake.wait(s) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
        };
        let mut exec = Executor {
            req,
            df: &df,
            loc: &loc,
            graph: &graph,
            global_declared: &global_declared,
            predefined: &predefined,
            consumed: BTreeSet::new(),
            shared: &shared,
            entries: Vec::new(),
            hits: 0,
            misses: 0,
            cache_mounts: BTreeMap::new(),
        };
        let result = match stages.get(index) {
            Some(stage) => {
                let name = stage_names
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| format!("stage-{index}"));
                exec.run_stage(
                    index,
                    &name,
                    stage.from_instruction,
                    stage.instructions,
                    &ready,
                )
            }
            None => Err(BuildError::NoStages),
        };
        let Ok(mut s) = schedule.lock() else { return };
        s.running -= 1;
        match result {
            Ok(r) => {
                s.done.insert(index, Arc::new(r));
                s.consumed.extend(exec.consumed);
                s.entries.insert(index, exec.entries);
                s.hits += exec.hits;
                s.misses += exec.misses;
                s.cache_mounts.extend(exec.cache_mounts);
            }
            Err(e) => {
                if s.error.is_none() {
                    s.error = Some(e);
                }
            }
        }
        wake.notify_all();
    };
    std::thread::scope(|scope| {
        for (reference, platform) in &prefetch {
            let shared = &shared;
            scope.spawn(move || {
                // Errors surface (with their Dockerfile line) when the
                // stage itself resolves the image.
                if let Err(e) = resolve_once(req, shared, reference, platform) {
                    tracing::debug!("prefetch of {reference} failed: {e}");
                }
            });
        }
        for _ in 1..jobs {
            scope.spawn(worker);
        }
        worker();
    });
    let mut schedule = schedule
        .into_inner()
        .map_err(|_| BuildError::Panicked("a build worker"))?;
    // Layers a stage handed to one that never ran (the build failed) are
    // waited for, so no writer outlives the build.
    for r in schedule.done.values() {
        if let Ok(mut q) = r.handoff.lock() {
            q.join_all();
        }
    }
    // Layers of stages outside the image, written while later stages ran:
    // waited for (before any stage root moves) and recorded.
    let deferred = shared
        .deferred
        .lock()
        .map(|mut d| std::mem::take(&mut *d))
        .unwrap_or_default();
    for p in deferred {
        let layer = match p.writer.join() {
            Ok(Ok(layer)) => layer,
            Ok(Err(e)) => {
                req.progress.info(&format!(
                    "warning: a layer of a stage outside the image could not be written for the cache: {e}"
                ));
                continue;
            }
            Err(_) => continue,
        };
        req.progress.step_info(
            p.step,
            &format!("layer {} ({} bytes)", layer.digest, layer.size),
        );
        let (Some(key), Some(history)) = (p.key, p.history) else {
            continue;
        };
        let record = StepRecord {
            layer: Some(layer),
            history,
        };
        put_record(req, &key, &record);
        schedule
            .entries
            .entry(p.stage)
            .or_default()
            .push((p.stage, key, record));
    }
    if let Some(e) = schedule.error.take() {
        return Err(e);
    }
    consumed.extend(std::mem::take(&mut schedule.consumed));
    let target = schedule
        .done
        .remove(&graph.target)
        .ok_or(BuildError::NoStages)?;
    let target_stages = graph.base_chain(graph.target);
    let (hits, misses) = (schedule.hits, schedule.misses);
    let cache_entries = graph
        .order
        .iter()
        .filter_map(|i| schedule.entries.remove(i))
        .flatten()
        .map(|(stage, key, record)| CacheEntry {
            in_target: target_stages.contains(&stage),
            key,
            record,
        })
        .collect();
    if let Err(e) = req.stat_cache.save() {
        tracing::warn!("could not save the context stat cache: {e}");
    }
    // Each stage's finished root, whole, is kept for the next build.
    if let Some(snaps) = shared.roots.kept() {
        for r in schedule.done.values().chain(std::iter::once(&target)) {
            let whole = r
                .applied
                .lock()
                .is_ok_and(|n| *n > 0 && *n == r.image.layers.len());
            if whole {
                snaps.keep_moved(&r.key, &r.rootfs);
            }
        }
    }
    let mut image = target.image.clone();
    for (k, v) in &req.labels {
        image.config.config.labels.insert(k.clone(), v.clone());
    }
    let stored = kiln_image::store_image(req.store, &image, req.format)?;
    let unused_args = req
        .build_args
        .keys()
        .filter(|k| !consumed.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .cloned()
        .collect();
    req.progress.info(&format!(
        "built {} in {:.2}s: {} layer(s), image {}",
        stage_names
            .get(graph.target)
            .map(String::as_str)
            .unwrap_or("image"),
        started.elapsed().as_secs_f64(),
        image.layers.len(),
        stored.manifest.digest
    ));
    if !req.cache.is_empty() {
        req.progress.info(&format!(
            "cache: {hits} step(s) reused, {misses} step(s) ran"
        ));
    }
    Ok(BuildOutput {
        image,
        stored,
        unused_args,
        lint_warnings,
        cache_entries,
        cache_hits: hits,
        cache_misses: misses,
        cache_mounts: std::mem::take(&mut schedule.cache_mounts)
            .into_iter()
            .collect(),
    })
}
