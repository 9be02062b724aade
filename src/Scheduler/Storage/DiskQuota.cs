using Potluck.Scheduler.Metrics;

namespace Potluck.Scheduler.Storage;

/// <summary>
/// The one limit on what a node keeps on disk for others (<c>compute:provider:diskBytes</c>): the modules it was sent
/// (<see cref="Execution.ModuleStore"/>, <c>modules/{sha256}.wasm</c>) and their compiled forms (the sandbox's compiled
/// cache, <c>cache/{sha256}.{fingerprint}.cwasm</c>), each file counted by its path with the module it belongs to.
/// <para>
/// A file is counted before it is written (<see cref="TryAdd"/>): room is made by deleting the least recently used files
/// of modules no lease holds, and when that cannot make room nothing is deleted and the file is not written, so the
/// bytes on disk never exceed the limit. A lease holds its module from its offer to its end (<see cref="TryHold"/>):
/// the module's files are never deleted meanwhile, and a module still to be sent has its bytes reserved, so leases
/// admitted together cannot overcommit the disk. Lowering the limit (<see cref="SetLimit"/>) deletes down to it at once,
/// and what leases hold as soon as they end. What an earlier run left is counted by the stores' scans at start
/// (<see cref="Adopt"/>), oldest first, so usage survives a restart. Thread-safe; no wall clock: recency is a counter
/// (files found at start are ordered by their modification times).
/// </para>
/// </summary>
public sealed class DiskQuota
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Entry> _files = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _pins = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<Hold>> _reservations = new(StringComparer.Ordinal);
    private readonly ComputeInstruments? _instruments;
    private long _limit;
    private long _used;
    private long _reserved;
    private long _clock;
    private long _evicted;

    private sealed class Entry(string module, long size, long lastUse)
    {
        public string Module { get; } = module;

        public long Size { get; } = size;

        public long LastUse { get; set; } = lastUse;
    }

    /// <param name="limitBytes">Most bytes kept on disk; 0 keeps nothing.</param>
    /// <param name="instruments">Where evictions are counted; null counts nowhere.</param>
    public DiskQuota(long limitBytes, ComputeInstruments? instruments = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limitBytes);
        _limit = limitBytes;
        _instruments = instruments;
    }

    /// <summary>The limit now.</summary>
    public long LimitBytes
    {
        get
        {
            lock (_gate)
            {
                return _limit;
            }
        }
    }

    /// <summary>Bytes of the files counted now (on disk, or being written).</summary>
    public long UsedBytes
    {
        get
        {
            lock (_gate)
            {
                return _used;
            }
        }
    }

    /// <summary>Bytes reserved for modules that leases in progress are still receiving.</summary>
    public long ReservedBytes
    {
        get
        {
            lock (_gate)
            {
                return _reserved;
            }
        }
    }

    /// <summary>Files counted now.</summary>
    public int Files
    {
        get
        {
            lock (_gate)
            {
                return _files.Count;
            }
        }
    }

    /// <summary>Files deleted to make room since start.</summary>
    public long Evicted => Interlocked.Read(ref _evicted);

    /// <summary>True when a lease holds the module with this SHA-256 (lower-case hex).</summary>
    public bool IsPinned(string module)
    {
        lock (_gate)
        {
            return _pins.ContainsKey(module);
        }
    }

    /// <summary>
    /// Counts a file found on disk at start (its modification time orders it among the others found); call
    /// <see cref="EvictToLimit"/> once every store has been scanned.
    /// </summary>
    public void Adopt(string path, string module, long size, DateTime lastWriteUtc)
    {
        var full = Path.GetFullPath(path);
        lock (_gate)
        {
            ForgetLocked(full);
            var use = Math.Max(0, lastWriteUtc.Ticks);
            _clock = Math.Max(_clock, use);
            _files[full] = new Entry(module, size, use);
            _used += size;
        }
    }

    /// <summary>Deletes the least recently used files of modules no lease holds until the limit holds (or nothing more may go).</summary>
    public void EvictToLimit()
    {
        lock (_gate)
        {
            EvictLocked(_used - _limit);
        }
    }

    /// <summary>Changes the limit; past it, files of modules no lease holds are deleted at once, least recently used first.</summary>
    public void SetLimit(long limitBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limitBytes);
        lock (_gate)
        {
            _limit = limitBytes;
            EvictLocked(_used - _limit);
        }
    }

    /// <summary>
    /// Counts a file of <paramref name="size"/> bytes about to be written at <paramref name="path"/> for
    /// <paramref name="module"/>, first deleting the least recently used files of modules no lease holds when needed.
    /// False, and nothing deleted, when it cannot fit, or when the path is counted already (another writer has it). The
    /// caller writes the file, or calls <see cref="Forget"/>.
    /// </summary>
    /// <param name="takeReservation">The file is the module itself: the bytes a lease reserved for it (if any) become the file.</param>
    public bool TryAdd(string path, string module, long size, bool takeReservation = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        var full = Path.GetFullPath(path);
        lock (_gate)
        {
            if (_files.ContainsKey(full))
            {
                return false;
            }
            if (takeReservation && _reservations.TryGetValue(module, out var holds) && holds.Count > 0)
            {
                // The lease that reserved room for this module now stores it: its reservation becomes the file.
                var hold = holds[0];
                holds.RemoveAt(0);
                if (holds.Count == 0)
                {
                    _reservations.Remove(module);
                }
                hold.Consumed = true;
                _reserved -= hold.Bytes;
            }
            if (!MakeRoomLocked(size))
            {
                return false;
            }
            _files[full] = new Entry(module, size, ++_clock);
            _used += size;
            return true;
        }
    }

    /// <summary>Marks <paramref name="path"/> as just used (the last to be deleted).</summary>
    public void Touch(string path)
    {
        var full = Path.GetFullPath(path);
        lock (_gate)
        {
            if (_files.TryGetValue(full, out var entry))
            {
                entry.LastUse = ++_clock;
            }
        }
    }

    /// <summary>Stops counting <paramref name="path"/> (its owner deleted it, or did not write it).</summary>
    public void Forget(string path)
    {
        var full = Path.GetFullPath(path);
        lock (_gate)
        {
            ForgetLocked(full);
        }
    }

    /// <summary>Keeps every file of <paramref name="module"/> until the returned handle is disposed.</summary>
    public IDisposable Pin(string module)
    {
        lock (_gate)
        {
            _pins[module] = _pins.GetValueOrDefault(module) + 1;
        }
        return new Hold(this, module, 0) { Consumed = true };
    }

    /// <summary>
    /// What a lease needs on disk, held from its offer to its end: <paramref name="module"/> pinned, and
    /// <paramref name="storeBytes"/> reserved for its bytes when it is still to be sent (0 when it is held here). Room is
    /// made by deleting the least recently used files of modules no lease holds. Null, and nothing deleted or held, when
    /// the files leases hold and the bytes they reserved leave too little.
    /// </summary>
    public IDisposable? TryHold(string module, long storeBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(storeBytes);
        lock (_gate)
        {
            _pins[module] = _pins.GetValueOrDefault(module) + 1;
            if (storeBytes == 0)
            {
                return new Hold(this, module, 0) { Consumed = true };
            }
            if (!MakeRoomLocked(storeBytes))
            {
                UnpinLocked(module);
                return null;
            }
            var hold = new Hold(this, module, storeBytes);
            _reserved += storeBytes;
            if (!_reservations.TryGetValue(module, out var holds))
            {
                _reservations[module] = holds = [];
            }
            holds.Add(hold);
            return hold;
        }
    }

    /// <summary>
    /// Makes <paramref name="size"/> more bytes fit under the limit by deleting the least recently used unpinned files; false
    /// (nothing deleted) when even deleting them all would not.
    /// </summary>
    private bool MakeRoomLocked(long size)
    {
        var over = _used + _reserved + size - _limit;
        if (over <= 0)
        {
            return true;
        }
        var freeable = 0L;
        foreach (var e in _files.Values)
        {
            if (!_pins.ContainsKey(e.Module))
            {
                freeable += e.Size;
            }
        }
        if (freeable < over)
        {
            return false;
        }
        EvictLocked(over);
        return true;
    }

    /// <summary>Deletes least recently used unpinned files until <paramref name="bytes"/> are freed or none is left.</summary>
    private void EvictLocked(long bytes)
    {
        if (bytes <= 0)
        {
            return;
        }
        var victims = _files.Where(kv => !_pins.ContainsKey(kv.Value.Module)).OrderBy(kv => kv.Value.LastUse).ToList();
        var freed = 0L;
        var count = 0;
        foreach (var (path, entry) in victims)
        {
            if (freed >= bytes)
            {
                break;
            }
            TryDelete(path);
            ForgetLocked(path);
            freed += entry.Size;
            count++;
        }
        if (count > 0)
        {
            Interlocked.Add(ref _evicted, count);
            _instruments?.DiskEvicted(count, freed);
        }
    }

    private void ForgetLocked(string full)
    {
        if (_files.Remove(full, out var entry))
        {
            _used -= entry.Size;
        }
    }

    private void UnpinLocked(string module)
    {
        var left = _pins.GetValueOrDefault(module) - 1;
        if (left <= 0)
        {
            _pins.Remove(module);
        }
        else
        {
            _pins[module] = left;
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Unreadable or gone: no longer counted either way; a restart's scan counts whatever is left.
        }
    }

    private sealed class Hold(DiskQuota quota, string module, long bytes) : IDisposable
    {
        private int _done;

        public long Bytes { get; } = bytes;

        /// <summary>The reservation became a file (or there was none).</summary>
        public bool Consumed { get; set; }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) != 0)
            {
                return;
            }
            lock (quota._gate)
            {
                if (!Consumed)
                {
                    quota._reserved -= Bytes;
                    if (quota._reservations.TryGetValue(module, out var holds) && holds.Remove(this) && holds.Count == 0)
                    {
                        quota._reservations.Remove(module);
                    }
                    Consumed = true;
                }
                quota.UnpinLocked(module);
                // A limit lowered while this lease held its module applies once the lease ends.
                quota.EvictLocked(quota._used - quota._limit);
            }
        }
    }
}
