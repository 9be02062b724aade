using System.Security.Cryptography;

namespace Potluck.Node.Control;

/// <summary>
/// Bytes handed to the running node over the control API (a module, a task's input) before the call that uses them,
/// kept by SHA-256 in memory: at most <see cref="ControlOptions.MaxBlobs"/> blobs of <see cref="ControlOptions.MaxBlobBytes"/>
/// each and <see cref="ControlOptions.MaxBlobStoreBytes"/> in all; past either bound the least recently used go first (a
/// client that finds its blob gone uploads it again). Thread-safe.
/// </summary>
public sealed class BlobStore(ControlOptions options)
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, LinkedListNode<(string Hash, byte[] Bytes)>> _byHash = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Hash, byte[] Bytes)> _recent = new();
    private long _bytes;

    /// <summary>Bytes held now.</summary>
    public long Bytes
    {
        get
        {
            lock (_gate)
            {
                return _bytes;
            }
        }
    }

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _byHash.Count;
            }
        }
    }

    /// <summary>Keeps <paramref name="bytes"/> and returns its SHA-256 in lower-case hex.</summary>
    public string Put(byte[] bytes)
    {
        if (bytes.Length > options.MaxBlobBytes)
        {
            throw new ControlException(ControlErrorCode.LineTooLong, $"a blob is at most {options.MaxBlobBytes} bytes");
        }
        var hash = Convert.ToHexStringLower(SHA256.HashData(bytes));
        lock (_gate)
        {
            if (_byHash.TryGetValue(hash, out var held))
            {
                _recent.Remove(held);
                _recent.AddFirst(held);
                return hash;
            }
            while (_recent.Count > 0 && (_byHash.Count >= options.MaxBlobs || _bytes + bytes.Length > options.MaxBlobStoreBytes))
            {
                var oldest = _recent.Last!;
                _recent.RemoveLast();
                _byHash.Remove(oldest.Value.Hash);
                _bytes -= oldest.Value.Bytes.Length;
            }
            _byHash[hash] = _recent.AddFirst((hash, bytes));
            _bytes += bytes.Length;
        }
        return hash;
    }

    /// <summary>The bytes whose SHA-256 is <paramref name="hash"/> (hex), or null when not held.</summary>
    public byte[]? Get(string hash)
    {
        lock (_gate)
        {
            if (!_byHash.TryGetValue(hash.ToLowerInvariant(), out var node))
            {
                return null;
            }
            _recent.Remove(node);
            _recent.AddFirst(node);
            return node.Value.Bytes;
        }
    }
}
