using System.Security.Cryptography;

namespace Potluck.Scheduler.Requesting;

/// <summary>
/// The SHA-256 of the modules this node submits, so that a lease does not hash its whole module again when the same module
/// was submitted before (a job of many tasks, or the same program submitted task after task): a module is recognised by
/// comparing its bytes with a private copy of a module hashed here, several times cheaper than hashing them (the sandbox's
/// module cache does the same). Byte equality with bytes whose SHA-256 was computed here gives that SHA-256, so nothing is
/// trusted that was not hashed; the copy is this class's own, so a caller changing its buffer after a submission changes
/// nothing remembered. Bounded: at most <see cref="MaxEntries"/> modules and <see cref="MaxBytes"/> of copies, the least
/// recently used forgotten first; a module over a quarter of that is hashed every time and not kept.
/// </summary>
internal sealed class ModuleDigests
{
    /// <summary>Modules remembered at most.</summary>
    public const int MaxEntries = 8;

    /// <summary>Bytes of module copies kept at most: 64 MiB.</summary>
    public const long MaxBytes = 64L << 20;

    private sealed record Entry(byte[] Bytes, byte[] Hash);

    private readonly Lock _gate = new();
    /// <summary>Most recently used first; replaced, never changed, so a reader may walk a snapshot outside the lock.</summary>
    private Entry[] _entries = [];

    /// <summary>Modules hashed here so far (tests: a module submitted again is not hashed again).</summary>
    public long Hashed => Interlocked.Read(ref _hashed);

    private long _hashed;

    /// <summary>The SHA-256 of <paramref name="module"/>: a fresh array the caller may keep.</summary>
    public byte[] Of(ReadOnlySpan<byte> module)
    {
        Entry[] entries;
        lock (_gate)
        {
            entries = _entries;
        }
        foreach (var e in entries)
        {
            if (e.Bytes.Length == module.Length && module.SequenceEqual(e.Bytes))
            {
                Touch(e);
                return (byte[])e.Hash.Clone();
            }
        }
        var hash = SHA256.HashData(module);
        Interlocked.Increment(ref _hashed);
        if (module.Length <= MaxBytes / 4)
        {
            Remember(new Entry(module.ToArray(), hash));
        }
        return (byte[])hash.Clone();
    }

    private void Touch(Entry e)
    {
        lock (_gate)
        {
            var i = Array.IndexOf(_entries, e);
            if (i > 0)
            {
                _entries = [e, .. _entries[..i], .. _entries[(i + 1)..]];
            }
        }
    }

    private void Remember(Entry e)
    {
        lock (_gate)
        {
            if (_entries.Any(x => x.Bytes.AsSpan().SequenceEqual(e.Bytes)))
            {
                return; // another lease hashed the same module meanwhile
            }
            var kept = new List<Entry> { e };
            var bytes = (long)e.Bytes.Length;
            foreach (var x in _entries)
            {
                if (kept.Count < MaxEntries && bytes + x.Bytes.Length <= MaxBytes)
                {
                    kept.Add(x);
                    bytes += x.Bytes.Length;
                }
            }
            _entries = [.. kept];
        }
    }

    /// <summary>Modules remembered now and the bytes of their copies (tests: the bounds hold).</summary>
    internal (int Count, long Bytes) Footprint()
    {
        lock (_gate)
        {
            return (_entries.Length, _entries.Sum(e => (long)e.Bytes.Length));
        }
    }
}
