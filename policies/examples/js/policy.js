// An example Crops policy in JavaScript: the `crops:policy@0.1.0` `policy`
// world, built into a component by componentize-js (../build.sh).
//
// Admission is the SPEC plan table's limits (concurrent = creating + created
// + running; self-hosted workers), placement is least-loaded with every
// stock constraint filter, so this module passes
// policies/conformance/stock.json exactly as the Rust stock policies do:
//
//   crops-orchestrator policy test policies/dist/examples/js.wasm \
//       --cases policies/conformance/stock.json
//
// It must stay pure: no clock, no randomness, no files, no network. The host
// grants none of them anyway (its WASI context is empty, clocks are fixed,
// random is seeded); console output goes to the decision's log, capped.
//
// Values as componentize-js passes them: records are objects with
// camelCase fields, enums are their WIT names ('byom', 'standard'), u64s
// are BigInts, an option is the value or undefined, and a variant is
// {tag, val}.

const LOCAL_IMAGE_PREFIX = 'localhost/';
const STRATEGY = 'least-loaded';
const PROFILES = ['open', 'standard', 'strict', 'offline'];

export function admit(req, plan, usage) {
  const limit = plan.concurrentContainers;
  if (limit === undefined || limit === null) return { tag: 'allow' };
  const held = usage.creating + usage.created + usage.running;
  if (held >= limit) {
    return {
      tag: 'deny',
      val: `plan ${plan.name} allows ${limit} concurrent containers and the tenant has ${held} (creating, created or running)`,
    };
  }
  return { tag: 'allow' };
}

export function admitWorker(tenantId, plan, usage) {
  const limit = plan.selfHostedWorkers;
  if (limit === undefined || limit === null) return { tag: 'allow' };
  if (usage.selfHostedWorkers >= limit) {
    return {
      tag: 'deny',
      val: `plan ${plan.name} allows ${limit} self-hosted workers and the tenant has ${usage.selfHostedWorkers}`,
    };
  }
  return { tag: 'allow' };
}

export function place(req, candidates) {
  const text = textOf(candidates.text);
  const imageSets = candidates.imageSets.map((set) => set.map(text));
  const workers = candidates.workers;
  const verdicts = new Array(workers.length);
  let best;
  let bestScore = 0;
  let bestId = '';
  let feasible = 0;
  for (let i = 0; i < workers.length; i++) {
    const w = workers[i];
    const id = text(w.id);
    const why = reject(req, w, id, text, imageSets);
    if (why !== undefined) {
      verdicts[i] = { feasible: false, reason: why, score: 0n };
      continue;
    }
    feasible += 1;
    const score = leastLoaded(w);
    // The best score wins; ties go to the smallest id.
    if (best === undefined || score > bestScore || (score === bestScore && id < bestId)) {
      best = i;
      bestScore = score;
      bestId = id;
    }
    verdicts[i] = { feasible: true, reason: '', score: BigInt(score) };
  }
  const reason =
    best === undefined
      ? `${STRATEGY}: no worker fits among ${workers.length} candidates`
      : `${STRATEGY}: ${bestId} has the best score ${bestScore} of ${feasible} feasible among ${workers.length} candidates`;
  return { verdicts, chosen: best, reason };
}

// A text-ref names UTF-8 bytes start..start+len of the call's text.
function textOf(all) {
  const bytes = new TextEncoder().encode(all);
  if (bytes.length === all.length) {
    return (r) => all.slice(r.start, r.start + r.len);
  }
  const decoder = new TextDecoder();
  return (r) => decoder.decode(bytes.subarray(r.start, r.start + r.len));
}

// Why `w` cannot take `req`, or undefined: the stock constraint filters.
function reject(req, w, id, text, imageSets) {
  if (req.pinnedWorker !== undefined && req.pinnedWorker !== null && req.pinnedWorker !== id) {
    return `not the pinned worker ${req.pinnedWorker}`;
  }
  if (!w.online) return 'offline';
  if (w.drained) return 'drained';
  if (w.cordoned) return 'cordoned';
  if (w.mode === 'byom' && text(w.tenantId) !== req.tenantId) {
    return 'a self-hosted worker of another tenant';
  }
  const platform = req.platform ?? 'linux';
  const havePlatform = text(w.platform);
  if (havePlatform !== platform) return `platform ${shown(havePlatform)} (needs ${platform})`;
  if (req.arch !== undefined && req.arch !== null) {
    const have = text(w.arch);
    if (have !== req.arch) return `arch ${shown(have)} (needs ${req.arch})`;
  }
  if (req.region !== undefined && req.region !== null) {
    const have = text(w.region);
    if (have !== req.region) return `region ${shown(have)} (needs ${req.region})`;
  }
  if (PROFILES.indexOf(req.profile) < PROFILES.indexOf(w.securityFloor)) {
    return `security floor ${w.securityFloor} rejects profile ${req.profile}`;
  }
  if (req.image.startsWith(LOCAL_IMAGE_PREFIX) && !(imageSets[w.images] ?? []).includes(req.image)) {
    return `local image ${req.image} is not on this worker`;
  }
  return undefined;
}

// Higher is better: idle CPU plus free memory, each in per mille.
// Plain numbers, not BigInts (slow in the interpreter): for memory sizes
// below 8 TiB the division is exact, as the Rust policy's integer one.
function leastLoaded(w) {
  return 2000 - Math.min(w.cpuLoadPermille, 1000) - usedPermille(w);
}

function usedPermille(w) {
  const total = Number(w.memoryTotal);
  if (total === 0) return 1000;
  const used = Math.max(total - Number(w.memoryFree), 0);
  return Math.min(Math.floor((used * 1000) / total), 1000);
}

function shown(value) {
  return value === '' ? 'unknown' : value;
}
