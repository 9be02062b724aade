using System.Security.Cryptography;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Execution;

/// <summary>
/// WASM modules by SHA-256: the provider's answer to "do you hold this module?" (<see cref="IModuleCache"/>), so a
/// requester sends a module only once. Kept in memory (least recently used evicted beyond
/// <see cref="MaxMemoryBytes"/>) and, with a folder, on disk as <c>{sha256}.wasm</c> (written to a temporary name and
/// renamed; checked against its name whenever read, and deleted when it does not match). Thread-safe.
/// </summary>
public sealed class ModuleStore : IModuleCache
{
    private readonly string? _directory;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, LinkedListNode<(string Hex, byte[] Bytes)>> _map = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Hex, byte[] Bytes)> _lru = new();
    private long _bytes;

    /// <param name="directory">Where modules persist; null keeps them in memory only.</param>
    /// <param name="maxMemoryBytes">Most module bytes kept in memory. Default 256 MiB.</param>
    public ModuleStore(string? directory, long maxMemoryBytes = 256L << 20)
    {
        _directory = directory;
        MaxMemoryBytes = maxMemoryBytes;
        if (directory is not null)
        {
            Protocol.Runtime.OwnerOnly.CreateDirectory(directory);
        }
    }

    public long MaxMemoryBytes { get; }

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

    /// <summary>Stores a module (its hash is computed here, never trusted).</summary>
    public void Put(ReadOnlyMemory<byte> module)
    {
        var bytes = module.ToArray();
        var hex = Convert.ToHexStringLower(SHA256.HashData(bytes));
        Remember(hex, bytes);
        if (PathFor(hex) is { } path && !File.Exists(path))
        {
            var temp = $"{path}.{Guid.NewGuid():N}.tmp";
            try
            {
                Protocol.Runtime.OwnerOnly.WriteNewFile(temp, bytes);
                File.Move(temp, path, overwrite: true);
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
