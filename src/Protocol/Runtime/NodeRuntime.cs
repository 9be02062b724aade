using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Security.Cryptography;
using System.Text;

namespace Potluck.Protocol.Runtime;

/// <summary>
/// What a node runs on, chosen once by the node builder (DESIGN §10, §11) and handed to every component: the clock,
/// where background work and pipe continuations run, security randomness, and replayable randomness for protocol
/// choices (gossip peer selection, DHT walks, jitter). A real node gets the system clock, the thread pool, the OS's
/// cryptographic generator and unpredictable protocol randomness; a simulation gets a <see cref="VirtualClock"/>, an
/// <see cref="EventLoop"/> and both kinds of randomness derived from one seed, so the same seed replays the same run.
/// Components never pick a clock or a generator themselves.
/// </summary>
public sealed class NodeRuntime
{
    private readonly EventLoop? _loop;

    private NodeRuntime(TimeProvider time, TaskScheduler scheduler, PipeScheduler pipes, ISecureRandom secure, long? seed, EventLoop? loop,
        SharedValues? shared = null)
    {
        SharedValues = shared ?? SharedValues.None;
        Time = time;
        Scheduler = scheduler;
        PipeScheduler = pipes;
        SecureRandom = secure;
        Seed = seed;
        _loop = loop;
    }

    /// <summary>A real node: system clock, thread pool, OS randomness.</summary>
    public static NodeRuntime System { get; } = new(TimeProvider.System, TaskScheduler.Default, PipeScheduler.ThreadPool, SystemSecureRandom.Instance, null, null);

    /// <summary>
    /// A real node's security and scheduling on another clock (tests that move a clock but run on the thread pool, and
    /// protocol randomness replayable from <paramref name="seed"/> when given). Security randomness stays the OS's.
    /// </summary>
    public static NodeRuntime WithTime(TimeProvider time, long? seed = null) =>
        new(time, TaskScheduler.Default, PipeScheduler.ThreadPool, SystemSecureRandom.Instance, seed, null);

    /// <summary>A simulated node: everything on <paramref name="loop"/> and <paramref name="clock"/>, all randomness from <paramref name="seed"/>.</summary>
    public static NodeRuntime Simulated(VirtualClock clock, EventLoop loop, long seed) =>
        new(clock, loop.TaskScheduler, loop.PipeScheduler, new SeededSecureRandom(seed, "potluck/secure"), seed, loop);

    /// <summary>
    /// Immutable decoded values this node shares with the other nodes of its process (a simulated mesh's, given by
    /// <see cref="WithSharedValues"/>); <see cref="Runtime.SharedValues.None"/> (nothing shared) otherwise.
    /// </summary>
    public SharedValues SharedValues { get; }

    /// <summary>This runtime, its nodes keeping the instances of <paramref name="shared"/> (a simulated mesh's nodes).</summary>
    public NodeRuntime WithSharedValues(SharedValues shared) =>
        new(Time, Scheduler, PipeScheduler, SecureRandom, Seed, _loop, shared);

    /// <summary>The clock every component runs on.</summary>
    public TimeProvider Time { get; }

    /// <summary>Where background work starts (see <see cref="BackgroundWork"/>).</summary>
    public TaskScheduler Scheduler { get; }

    /// <summary>Where pipe continuations run (give it to every <see cref="PipeOptions"/> a component creates).</summary>
    public PipeScheduler PipeScheduler { get; }

    /// <summary>Security randomness: ids, nonces, secrets, sampling decisions.</summary>
    public ISecureRandom SecureRandom { get; }

    /// <summary>The seed of replayable randomness, or null for a real node.</summary>
    public long? Seed { get; }

    /// <summary>Whether this runtime replays exactly (a simulation).</summary>
    public bool IsDeterministic => _loop is not null;

    /// <summary>
    /// Protocol randomness for one component (<paramref name="purpose"/> names it, e.g. "gossipsub"): replayable from the
    /// seed when there is one, otherwise seeded unpredictably by the OS. Never for ids, nonces, secrets or sampling
    /// decisions: those take <see cref="SecureRandom"/>. Not thread-safe, like any <see cref="Random"/>.
    /// </summary>
    public Random CreateRandom(string purpose)
    {
        ArgumentException.ThrowIfNullOrEmpty(purpose);
        if (Seed is not { } seed)
        {
            return new Random(RandomNumberGenerator.GetInt32(int.MaxValue));
        }
        var material = new byte[8 + Encoding.UTF8.GetByteCount(purpose)];
        BinaryPrimitives.WriteInt64LittleEndian(material, seed);
        Encoding.UTF8.GetBytes(purpose, material.AsSpan(8));
        var hash = SHA256.HashData(material);
        return new Random(BinaryPrimitives.ReadInt32LittleEndian(hash) & int.MaxValue);
    }

    /// <summary>
    /// Work running on another thread (a sandbox run), as the node should await it: unchanged on a real node; in a
    /// simulation completed on the loop once nothing external runs any more, in the order begun (<see cref="EventLoop.Settle{T}"/>),
    /// so the same seed gives the same events whatever the work's speed. Hold a <see cref="BeginExternalWork"/> mark
    /// from before the call until the await resumes.
    /// </summary>
    public Task<T> Settle<T>(Task<T> work) => _loop?.Settle(work) ?? work;

    /// <summary>
    /// Security randomness of its own for one component (<paramref name="purpose"/> names it), for a secret drawn without
    /// moving <see cref="SecureRandom"/>'s stream (so what every other draw gets stays as it was): a simulation's is
    /// derived from the seed and the purpose, a real node's is the OS's generator.
    /// </summary>
    public ISecureRandom CreateSecureRandom(string purpose)
    {
        ArgumentException.ThrowIfNullOrEmpty(purpose);
        return IsDeterministic && Seed is { } seed ? new SeededSecureRandom(seed, "potluck/secure/" + purpose) : SystemSecureRandom.Instance;
    }

    /// <summary>
    /// Announces work on another thread that will post back (a sandbox run): under virtual time the driver does not
    /// call the node idle until it ends. A no-op for a real node.
    /// </summary>
    public IDisposable BeginExternalWork() => _loop?.BeginExternalWork() ?? NoWork.Instance;

    /// <summary>An owner for a component's background work on this runtime's scheduler.</summary>
    public BackgroundWork CreateBackgroundWork(string owner, Microsoft.Extensions.Logging.ILogger log) => new(owner, log, Scheduler, _owners);

    // Every owner of this runtime's background work, so one that links an operation recognises another's stop token.
    private readonly BackgroundWork.Family _owners = new();

    /// <summary>
    /// Starts <paramref name="loop"/> on this runtime's scheduler, as <c>Task.Run</c> does on the thread pool, for a
    /// component's own pumps that it keeps the task of and awaits when it closes (a Noise channel's read and write loops,
    /// a muxer's session loop) and that end on their own and log their own failures. Anything else is started through
    /// a <see cref="BackgroundWork"/>.
    /// </summary>
    public Task StartLoop(Func<Task> loop)
    {
        ArgumentNullException.ThrowIfNull(loop);
        return Task.Factory.StartNew(loop, CancellationToken.None, TaskCreationOptions.DenyChildAttach, Scheduler).Unwrap();
    }

    private sealed class NoWork : IDisposable
    {
        public static readonly NoWork Instance = new();

        public void Dispose()
        {
        }
    }
}
