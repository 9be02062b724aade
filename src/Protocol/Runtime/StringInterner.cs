namespace Potluck.Protocol.Runtime;

/// <summary>
/// A node's table of strings that many peers send alike (protocol ids, agent and protocol versions), so that 200 peers
/// speaking the same 20 protocols hold 20 strings, not 4,000. Bounded: once <see cref="Capacity"/> distinct strings are
/// kept, new ones are returned as they are (a remote that sends fresh names cannot grow it). Thread-safe; one per
/// node (never static: nodes in one process share nothing).
/// </summary>
internal sealed class StringInterner(int capacity)
{
    private readonly Dictionary<string, string> _strings = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    /// <summary>Most distinct strings kept.</summary>
    public int Capacity { get; } = capacity;

    /// <summary>Distinct strings kept now.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _strings.Count;
            }
        }
    }

    /// <summary>The kept string equal to <paramref name="s"/>, else <paramref name="s"/> (kept while there is room).</summary>
    public string Intern(string s)
    {
        lock (_gate)
        {
            if (_strings.TryGetValue(s, out var shared))
            {
                return shared;
            }
            if (_strings.Count < Capacity)
            {
                _strings[s] = s;
            }
            return s;
        }
    }

    /// <summary>As <see cref="Intern(string)"/>; null stays null.</summary>
    public string? InternOrNull(string? s) => s is null ? null : Intern(s);

    /// <summary>Each string of <paramref name="strings"/> interned, in order, in a new array.</summary>
    public string[] InternAll(IReadOnlyList<string> strings)
    {
        var interned = new string[strings.Count];
        for (var i = 0; i < interned.Length; i++)
        {
            interned[i] = Intern(strings[i]);
        }
        return interned;
    }
}

/// <summary>
/// A node's table of string lists that many peers send alike (identify's protocol list: the peers of one build send the
/// same list), so that 200 peers speaking the same 20 protocols hold one array, not 200 (~0.2 KiB each). Bounded as
/// <see cref="StringInterner"/>: once <see cref="Capacity"/> distinct lists are kept, new ones are returned as they are.
/// The arrays it returns are shared: nobody may write into them. Thread-safe; one per node.
/// </summary>
internal sealed class StringListInterner(int capacity)
{
    private readonly Dictionary<string[], string[]> _lists = new(OrdinalSequence.Instance);
    private readonly Lock _gate = new();

    /// <summary>Most distinct lists kept.</summary>
    public int Capacity { get; } = capacity;

    /// <summary>Distinct lists kept now.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _lists.Count;
            }
        }
    }

    /// <summary>The kept list equal to <paramref name="list"/> (the same strings, ordinal, in order), else <paramref name="list"/> (kept while there is room).</summary>
    public string[] Intern(string[] list)
    {
        if (list.Length == 0)
        {
            return [];
        }
        lock (_gate)
        {
            if (_lists.TryGetValue(list, out var shared))
            {
                return shared;
            }
            if (_lists.Count < Capacity)
            {
                _lists[list] = list;
            }
            return list;
        }
    }

    private sealed class OrdinalSequence : IEqualityComparer<string[]>
    {
        public static readonly OrdinalSequence Instance = new();

        public bool Equals(string[]? x, string[]? y)
        {
            if (ReferenceEquals(x, y))
            {
                return true;
            }
            if (x is null || y is null || x.Length != y.Length)
            {
                return false;
            }
            for (var i = 0; i < x.Length; i++)
            {
                if (!string.Equals(x[i], y[i], StringComparison.Ordinal))
                {
                    return false;
                }
            }
            return true;
        }

        public int GetHashCode(string[] list)
        {
            var hash = new HashCode();
            hash.Add(list.Length);
            foreach (var s in list)
            {
                hash.Add(s, StringComparer.Ordinal);
            }
            return hash.ToHashCode();
        }
    }
}
