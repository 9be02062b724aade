using System.Globalization;
using System.Buffers.Binary;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;

namespace Potluck.Protocol.Runtime;

/// <summary>
/// Watches every event a <see cref="VirtualTimeDriver"/> runs, a work item of its <see cref="EventLoop"/> or a timer of its
/// <see cref="VirtualClock"/>, and folds each into a digest: its virtual time, its kind and what it runs (the type of the
/// async method, continuation or timer state behind it). Two runs with one seed are the same run, event for event, when
/// their <see cref="Count"/> and <see cref="Hash"/> are equal; a trace hash covers only what a harness chose to record.
/// Optionally writes one line per event to a <see cref="TextWriter"/> (virtual ticks, kind, what it runs: method names
/// included, found by reflection, so slow) to diff two runs and find the first event that differs.
/// Called on the loop's thread only (the clock fires timers there under a driver).
/// </summary>
public sealed class EventDigest
{
    private readonly Dictionary<Type, ulong> _typeIds = [];
    private readonly Dictionary<(Type?, EventKind), long> _counts = [];
    private readonly TextWriter? _log;
    private readonly VirtualClock _clock;
    private ulong _hash = 0x9E3779B97F4A7C15;

    /// <param name="clock">The clock whose time stamps each event.</param>
    /// <param name="log">Where to write one line per event; null for the digest alone.</param>
    public EventDigest(VirtualClock clock, TextWriter? log = null)
    {
        ArgumentNullException.ThrowIfNull(clock);
        _clock = clock;
        _log = log;
    }

    /// <summary>Events folded in so far.</summary>
    public long Count { get; private set; }

    /// <summary>
    /// The digest of every event so far (64 bits, hex; a fast mix, not a cryptographic hash: it tells runs apart, it does
    /// not resist someone forging one): the same for the same run, event for event.
    /// </summary>
    public string Hash => _hash.ToString("x16", CultureInfo.InvariantCulture);

    internal void OnItem(Delegate callback, object? state) => Add(EventKind.Item, callback, state);

    internal void OnTimer(Delegate? callback, object? state) => Add(EventKind.Timer, callback, state);

    private enum EventKind : byte
    {
        Item = 1,
        Timer = 2,
    }

    private void Add(EventKind kind, Delegate? callback, object? state)
    {
        Count++;
        var ticks = _clock.GetTimestamp();
        var subject = Subject(kind, callback, state);
        var id = subject is null ? 0 : TypeId(subject);
        System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_counts, (subject, kind), out _)++;
        Fold((ulong)ticks);
        Fold((ulong)kind);
        Fold(id);
        if (_log is { } log)
        {
            log.Write(ticks.ToString(CultureInfo.InvariantCulture));
            log.Write(kind == EventKind.Item ? " item " : " timer ");
            log.WriteLine(Describe(callback, state));
        }
    }

    /// <summary>Mixes one word into the digest (splitmix64's finaliser on the word, then a multiply-rotate step): order matters.</summary>
    private void Fold(ulong word)
    {
        word += 0x9E3779B97F4A7C15;
        word = (word ^ (word >> 30)) * 0xBF58476D1CE4E5B9;
        word = (word ^ (word >> 27)) * 0x94D049BB133111EB;
        word ^= word >> 31;
        _hash = (System.Numerics.BitOperations.RotateLeft(_hash ^ word, 27) * 5) + 0x52DCE729;
    }

    /// <summary>
    /// Events so far by kind and what they ran (the type <see cref="Hash"/> folds in: a state machine, a timer's state, a
    /// closure), most first, at most <paramref name="top"/>: where a run's events go. A measurement only.
    /// </summary>
    public IReadOnlyList<(string What, long Count)> CountsByKind(int top = 40)
    {
        var byName = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var ((type, kind), count) in _counts)
        {
            var name = (kind == EventKind.Item ? "item " : "timer ") + (type?.ToString() ?? "-");
            byName[name] = byName.GetValueOrDefault(name) + count;
        }
        return byName.OrderByDescending(p => p.Value).ThenBy(p => p.Key, StringComparer.Ordinal).Take(top).Select(p => (p.Key, p.Value)).ToList();
    }

    /// <summary>A stable id of a type (its name hashed once): the same in every process of the same build.</summary>
    private ulong TypeId(Type type)
    {
        if (!_typeIds.TryGetValue(type, out var id))
        {
            _typeIds[type] = id = BinaryPrimitives.ReadUInt64LittleEndian(SHA256.HashData(Encoding.UTF8.GetBytes(type.FullName ?? type.ToString())));
        }
        return id;
    }

    /// <summary>
    /// The type that says what an event runs: the state machine of an awaited async method, the task's or pipe
    /// continuation's state, the timer's state; the callback's own type (a closure) when nothing more telling is there.
    /// </summary>
    private static Type? Subject(EventKind kind, Delegate? callback, object? state)
    {
        if (kind == EventKind.Item)
        {
            switch (state)
            {
                case ITuple { Length: 2 } pair when pair[1] is Task task:
                    return task.GetType(); // a task on the loop's scheduler: AsyncStateMachineBox<the method> or Task
                case ITuple { Length: 2 } pair when pair[0] is Delegate continuation:
                    return pair[1]?.GetType() ?? continuation.Target?.GetType() ?? continuation.Method.DeclaringType; // a pipe continuation
                case Delegate posted:
                    return posted.Target?.GetType() ?? posted.Method.DeclaringType; // an await continuation: the state machine box
            }
        }
        return state?.GetType() ?? callback?.Target?.GetType() ?? callback?.Method.DeclaringType;
    }

    /// <summary>What an event runs, in words, for the log (reflection: only when a log is asked for).</summary>
    private static string Describe(Delegate? callback, object? state)
    {
        var parts = new List<string>(3);
        if (callback is not null)
        {
            parts.Add(MethodName(callback));
        }
        switch (state)
        {
            case ITuple { Length: 2 } pair when pair[1] is Task task:
                parts.Add(TaskName(task));
                break;
            case ITuple { Length: 2 } pair when pair[0] is Delegate continuation:
                parts.Add(MethodName(continuation));
                parts.Add(pair[1]?.GetType().ToString() ?? "null");
                break;
            case Delegate posted:
                parts.Add(posted.Target is Task box ? TaskName(box) : MethodName(posted));
                break;
            case null:
                break;
            default:
                parts.Add(state.GetType().ToString());
                break;
        }
        return string.Join(" | ", parts);
    }

    private static string MethodName(Delegate d) => $"{d.Method.DeclaringType}.{d.Method.Name}";

    private static readonly FieldInfo? TaskAction = typeof(Task).GetField("m_action", BindingFlags.Instance | BindingFlags.NonPublic);

    private static string TaskName(Task task) =>
        TaskAction?.GetValue(task) is Delegate action ? $"{task.GetType()} {MethodName(action)}" : task.GetType().ToString();
}
