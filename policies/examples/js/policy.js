// An example Crops policy in JavaScript: the `crops:policy@0.2.0` `policy`
// world, built into a component by componentize-js (../build.sh). The
// candidates come packed; the SDK (policies/sdk/js/crops-policy.js) gives
// them as plain worker records.
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

import { workers as decode } from '../../sdk/js/crops-policy.js';

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
  const workers = decode(candidates);
  const verdicts = new Array(workers.length);
  let best;
  let bestScore = 0;
  let bestId = '';
  let feasible = 0;
  for (let i = 0; i < workers.length; i++) {
    const w = workers[i];
    const why = reject(req, w);
    if (why !== undefined) {
      verdicts[i] = { feasible: false, reason: why, score: 0n };
      continue;
    }
    feasible += 1;
    const score = leastLoaded(w);
    // The best score wins; ties go to the smallest id.
    if (best === undefined || score > bestScore || (score === bestScore && w.id < bestId)) {
      best = i;
      bestScore = score;
      bestId = w.id;
    }
    verdicts[i] = { feasible: true, reason: '', score: BigInt(score) };
  }
  const reason =
    best === undefined
      ? `${STRATEGY}: no worker fits among ${workers.length} candidates`
      : `${STRATEGY}: ${bestId} has the best score ${bestScore} of ${feasible} feasible among ${workers.length} candidates`;
  return { verdicts, chosen: best, reason };
}

// Why `w` cannot take `req`, or undefined: the stock constraint filters.
function reject(req, w) {
  if (req.pinnedWorker !== undefined && req.pinnedWorker !== null && req.pinnedWorker !== w.id) {
    return `not the pinned worker ${req.pinnedWorker}`;
  }
  if (!w.online) return 'offline';
  if (w.drained) return 'drained';
  if (w.cordoned) return 'cordoned';
  if (w.mode === 'byom' && w.tenantId !== req.tenantId) {
    return 'a self-hosted worker of another tenant';
  }
  const platform = req.platform ?? 'linux';
  if (w.platform !== platform) return `platform ${shown(w.platform)} (needs ${platform})`;
  if (req.arch !== undefined && req.arch !== null && w.arch !== req.arch) {
    return `arch ${shown(w.arch)} (needs ${req.arch})`;
  }
  if (req.region !== undefined && req.region !== null && w.region !== req.region) {
    return `region ${shown(w.region)} (needs ${req.region})`;
  }
  if (PROFILES.indexOf(req.profile) < PROFILES.indexOf(w.securityFloor)) {
    return `security floor ${w.securityFloor} rejects profile ${req.profile}`;
  }
  if (req.image.startsWith(LOCAL_IMAGE_PREFIX) && !w.images.includes(req.image)) {
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
