using System.Security.Cryptography;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Execution;

/// <summary>
/// WASM modules by SHA-256: the provider's answer to "do you hold this module?" (<see cref="IModuleCache"/>), so a
/// requester sends a module only once. Kept in memory (least recently used evicted beyond
/// <see cref="MaxMemoryBytes"/>) and, with a folder, on disk as <c>{sha256}.wasm</c> (written to a temporary name and
/// renamed; checked against its name whenever read, and deleted when it does not match). On disk the store keeps
/// within <see cref="MaxDiskBytes"/>: when a module is written past it, the least recently used are deleted first,
/// except modules pinned by a lease in progress (<see cref="Pin"/>). Callers store a module only once it has been
/// checked (its hash is the one agreed and it ran): junk a stranger sends is never kept. Thread-safe.
/// </summary>
public sealed class ModuleStore : IModuleCache
{
    private readonly string? _directory;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, LinkedListNode<(string Hex, byte[] Bytes)>> _map = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Hex, byte[] Bytes)> _lru = new();
    private long _bytes;
    private readonly Dictionary<string, (long Size, long LastUse)> _disk = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _pins = new(StringComparer.Ordinal);
    private long _diskBytes;
    private long _useClock;

    /// <param name="directory">Where modules persist; null keeps them in memory only.</param>
    /// <param name="maxMemoryBytes">Most module bytes kept in memory. Default 256 MiB.</param>
    /// <param name="maxDiskBytes">Most module bytes kept on disk. Default 512 MiB.</param>
    public ModuleStore(string? directory, long maxMemoryBytes = 256L << 20, long maxDiskBytes = 512L << 20)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxDiskBytes);
        _directory = directory;
        MaxMemoryBytes = maxMemoryBytes;
        MaxDiskBytes = maxDiskBytes;
        if (directory is not null)
        {
            Protocol.Runtime.OwnerOnly.CreateDirectory(directory);
            // What an earlier run kept counts against the quota, oldest first; a crash's leftover temporary files go.
            foreach (var file in new DirectoryInfo(directory).GetFiles().OrderBy(f => f.LastWriteTimeUtc))
            {
                if (file.Name.EndsWith(".tmp", StringComparison.Ordinal))
                {
                    TryDelete(file.FullName);
                }
                else if (file.Name.EndsWith(".wasm", StringComparison.Ordinal))
                {
                    _disk[file.Name[..^5]] = (file.Length, ++_useClock);
                    _diskBytes += file.Length;
                }
            }
            lock (_gate)
            {
                EvictFromDiskLocked();
            }
        }
    }

    public long MaxMemoryBytes { get; }

    public long MaxDiskBytes { get; }

    /// <summary>Module bytes on disk now.</summary>
    public long DiskBytes
    {
        get
        {
            lock (_gate)
            {
                return _diskBytes;
            }
        }
    }

    /// <summary>Keeps the module with this SHA-256 on disk until the returned handle is disposed (a lease in progress).</summary>
    public IDisposable Pin(ReadOnlySpan<byte> sha256)
    {
        var hex = Convert.ToHexStringLower(sha256);
        lock (_gate)
        {
            _pins[hex] = _pins.GetValueOrDefault(hex) + 1;
        }
        return new Unpin(this, hex);
    }

    private sealed class Unpin(ModuleStore store, string hex) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) != 0)
            {
                return;
            }
            lock (store._gate)
            {
                var left = store._pins.GetValueOrDefault(hex) - 1;
                if (left <= 0)
                {
                    store._pins.Remove(hex);
                }
                else
                {
                    store._pins[hex] = left;
                }
            }
        }
    }

    public bool Contains(ReadOnlySpan<byte> sha256)
    {
        if (sha256.Length != LeaseProtocol.HashLength)
        {
            return false;
        }
        var hex = Convert.ToHexStringLower(sha256);
        lock (_gate)
        {
            if (_map.ContainsKey(hex))
            {
                return true;
            }
        }
        return PathFor(hex) is { } path && File.Exists(path);
    }

    /// <summary>The module with this SHA-256, or null.</summary>
    public byte[]? TryGet(ReadOnlySpan<byte> sha256)
    {
        if (sha256.Length != LeaseProtocol.HashLength)
        {
            return null;
        }
        var hex = Convert.ToHexStringLower(sha256);
        lock (_gate)
        {
            TouchLocked(hex);
            if (_map.TryGetValue(hex, out var node))
            {
                _lru.Remove(node);
                _lru.AddFirst(node);
                return node.Value.Bytes;
            }
        }
        if (PathFor(hex) is not { } path)
        {
            return null;
        }
        try
        {
            var bytes = File.ReadAllBytes(path);
            if (!SHA256.HashData(bytes).AsSpan().SequenceEqual(sha256))
            {
                File.Delete(path);
                lock (_gate)
                {
                    ForgetDiskLocked(hex);
                }
                return null;
            }
            Remember(hex, bytes);
            return bytes;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// Stores a module (its hash is computed here, never trusted); false, and nothing kept, when
    /// <paramref name="expectedSha256"/> is given and differs. Keep only modules that have been checked.
    /// </summary>
    public bool Put(ReadOnlyMemory<byte> module, ReadOnlySpan<byte> expectedSha256 = default)
    {
        var bytes = module.ToArray();
        var hash = SHA256.HashData(bytes);
        if (!expectedSha256.IsEmpty && !expectedSha256.SequenceEqual(hash))
        {
            return false;
        }
        var hex = Convert.ToHexStringLower(hash);
        Remember(hex, bytes);
        if (bytes.Length > MaxDiskBytes)
        {
            return true; // kept in memory only: it could never fit the disk quota
        }
        if (PathFor(hex) is { } path && !File.Exists(path))
        {
            var temp = $"{path}.{Guid.NewGuid():N}.tmp";
            try
            {
                Protocol.Runtime.OwnerOnly.WriteNewFile(temp, bytes);
                File.Move(temp, path, overwrite: true);
                lock (_gate)
                {
                    ForgetDiskLocked(hex);
                    _disk[hex] = (bytes.Length, ++_useClock);
                    _diskBytes += bytes.Length;
                    EvictFromDiskLocked();
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                try
                {
                    File.Delete(temp);
                }
                catch (Exception e2) when (e2 is IOException or UnauthorizedAccessException)
                {
                }
            }
        }
        return true;
    }

    private void TouchLocked(string hex)
    {
        if (_disk.TryGetValue(hex, out var entry))
        {
            _disk[hex] = (entry.Size, ++_useClock);
        }
    }

    private void ForgetDiskLocked(string hex)
    {
        if (_disk.Remove(hex, out var entry))
        {
            _diskBytes -= entry.Size;
        }
    }

    /// <summary>Deletes the least recently used unpinned modules until the disk quota holds.</summary>
    private void EvictFromDiskLocked()
    {
        if (_diskBytes <= MaxDiskBytes)
        {
            return;
        }
        foreach (var (hex, _) in _disk.Where(kv => !_pins.ContainsKey(kv.Key)).OrderBy(kv => kv.Value.LastUse).ToList())
        {
            if (_diskBytes <= MaxDiskBytes)
            {
                break;
            }
            if (PathFor(hex) is { } path)
            {
                TryDelete(path);
            }
            ForgetDiskLocked(hex);
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
        }
    }

    private void Remember(string hex, byte[] bytes)
    {
        if (bytes.Length > MaxMemoryBytes)
        {
            return;
        }
        lock (_gate)
        {
            if (_map.ContainsKey(hex))
            {
                return;
            }
            _map[hex] = _lru.AddFirst((hex, bytes));
            _bytes += bytes.Length;
            while (_bytes > MaxMemoryBytes && _lru.Last is { } last)
            {
                _lru.RemoveLast();
                _map.Remove(last.Value.Hex);
                _bytes -= last.Value.Bytes.Length;
            }
        }
    }

    private string? PathFor(string hex) => _directory is null ? null : Path.Combine(_directory, hex + ".wasm");
}
