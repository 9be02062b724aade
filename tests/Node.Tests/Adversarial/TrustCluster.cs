using Potluck.Node.Compute;
using Potluck.Node.Hosting;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Memory;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Requesting;
using Potluck.Scheduler.Topics;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// Compute nodes on one <see cref="VirtualTimeDriver"/>: real hosts (Noise, Yamux) on a <see cref="SimulatedNetwork"/>
/// whose pipes run on the driver's loop, each node with its own runtime (seeded), data directory and ledger, sharing an
/// in-memory topic hub. Attack tests build honest and adversarial members here and assert what the honest side ends with.
/// </summary>
internal sealed class TrustCluster : IAsyncDisposable
{
    private readonly VirtualTimeDriver _driver;
    private readonly Random _random;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "potluck-trust-tests", Guid.NewGuid().ToString("N"));

    public TrustCluster(VirtualTimeDriver driver, int seed)
    {
        _driver = driver;
        Seed = seed;
        _random = new Random(seed);
        Network = new SimulatedNetwork(driver.Clock, pipes: driver.Loop.PipeScheduler);
    }

    public int Seed { get; }

    public VirtualClock Time => _driver.Clock;

    public SimulatedNetwork Network { get; }

    public InMemoryTopicHub Hub { get; } = new();

    public List<Member> Members { get; } = [];

    public sealed record Member(string Name, PotluckNode Potluck, PrivateKey Key, string DataDir, Func<Task<PotluckNode>> Start)
    {
        public PeerId PeerId => Key.PeerId;

        public ComputeNode Node => Potluck.Compute!;

        public ComputeClient Client => Node.Client;

        public ProviderService Provider => Node.Provider!;

        public CreditLedger Ledger => Node.Ledger;
    }

    /// <summary>Adds a member; <paramref name="configure"/> may change its compute options after the test defaults.</summary>
    public async Task<Member> AddAsync(string name, bool provide, long price = 10, Func<ITaskExecutor, ITaskExecutor>? decorate = null,
        Func<ComputeOptions, ComputeOptions>? configure = null, long grant = ComputeCluster.Grant, PrivateKey? key = null)
    {
        key ??= PrivateKey.FromRandom(_random);
        var dir = Path.Combine(_root, name);
        var client = new ComputeClientOptionsBuilder().Build();
        Task<PotluckNode> Start()
        {
        var builder = PotluckNode.CreateBuilder()
            .UseSimulatedNetwork(Network)
            .UseRuntime(_driver.CreateRuntime(_random.Next()))
            .UseKey(key)
            .UseTopicBus(_ => Hub.Join(key.PeerId))
            .UseLoggerFactory(Potluck.Tests.TestLogging.Factory)
            .Configure(o =>
            {
                var compute = o.Compute with
                {
                    Enabled = true,
                    Provide = provide,
                    Provider = ComputeCluster.ProviderOptions(price),
                    Client = client,
                    Credits = new CreditsOptions { InitialGrant = grant },
                    Sandbox = new Potluck.Scheduler.Sandbox.SandboxOptions { MaxMemoryBytes = 128L << 20 },
                };
                return o with
                {
                    Listen = [Multiaddr.Parse("/memory/0")],
                    DataDir = dir,
                    Compute = configure is null ? compute : configure(compute),
                };
            });
        if (decorate is not null)
        {
            builder.DecorateProviderExecutor(decorate);
        }
        return builder.StartAsync();
        }
        var member = new Member(name, await Start(), key, dir, Start);
        Members.Add(member);
        return member;
    }

    /// <summary>
    /// A provider of <paramref name="cores"/> cores that gives them all to strangers, and a requester that has its
    /// advertisement: the opening of tests of one requester's leases with one provider.
    /// </summary>
    public async Task<(Member Provider, Member Requester)> ProviderAndRequesterAsync(int cores, Func<ITaskExecutor, ITaskExecutor>? decorate = null)
    {
        var provider = await AddAsync("provider", provide: true, price: 10, decorate: decorate,
            configure: c => c with { Provider = c.Provider with { Cores = cores, StrangerCoreShare = 1, MaxLeasesPerRequester = cores } });
        var requester = await AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, CancellationToken.None);
        return (provider, requester);
    }

    /// <summary>Stops a member (its host first, as a crash would) and returns; <see cref="RestartAsync"/> brings it back.</summary>
    public async Task StopAsync(Member member) => await member.Potluck.DisposeAsync();

    /// <summary>Starts a stopped member again with the same identity, data directory and settings.</summary>
    public async Task<Member> RestartAsync(Member member)
    {
        var restarted = member with { Potluck = await member.Start() };
        Members[Members.IndexOf(member)] = restarted;
        return restarted;
    }

    /// <summary>Earned entries in <paramref name="payee"/>'s ledger from <paramref name="payer"/>.</summary>
    public static long Earned(Member payee, Member payer) =>
        payee.Ledger.Recent(1000).Where(e => e.Kind == LedgerEntryKind.Earned && e.Counterparty == payer.PeerId).Sum(e => e.Amount);

    /// <summary>Spent entries in <paramref name="payer"/>'s ledger to <paramref name="payee"/>.</summary>
    public static long Spent(Member payer, Member payee) =>
        payer.Ledger.Recent(1000).Where(e => e.Kind == LedgerEntryKind.Spent && e.Counterparty == payee.PeerId).Sum(e => e.Amount);

    public async ValueTask DisposeAsync()
    {
        for (var i = Members.Count - 1; i >= 0; i--)
        {
            await Members[i].Potluck.DisposeAsync();
        }
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
