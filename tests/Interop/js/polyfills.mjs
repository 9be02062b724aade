// Node 20 lacks a few ES2024/2025 built-ins that js-libp2p 3.x and its services call.
// This module must be imported before anything from libp2p (ES modules evaluate imports
// in order, so `import './polyfills.mjs'` as the first line of peer.mjs is enough).

if (typeof Promise.withResolvers !== 'function') {
  // Used by @libp2p/ping, yamux, stream utils, it-queue, ...
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve
      let reject
      const promise = new this((res, rej) => { resolve = res; reject = rej })
      return { promise, resolve, reject }
    }
  })
}

// ES2025 Set methods (Node 22+): used by @libp2p/kad-dht's routing table.
const setMethods = {
  union (other) { const out = new Set(this); for (const v of other.keys()) out.add(v); return out },
  intersection (other) { const out = new Set(); for (const v of this) if (other.has(v)) out.add(v); return out },
  difference (other) { const out = new Set(); for (const v of this) if (!other.has(v)) out.add(v); return out },
  symmetricDifference (other) {
    const out = new Set(this)
    for (const v of other.keys()) { if (this.has(v)) out.delete(v); else out.add(v) }
    return out
  },
  isSubsetOf (other) { for (const v of this) if (!other.has(v)) return false; return true },
  isSupersetOf (other) { for (const v of other.keys()) if (!this.has(v)) return false; return true },
  isDisjointFrom (other) { for (const v of this) if (other.has(v)) return false; return true }
}
for (const [name, fn] of Object.entries(setMethods)) {
  if (typeof Set.prototype[name] !== 'function') {
    Object.defineProperty(Set.prototype, name, { configurable: true, writable: true, value: fn })
  }
}
