using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Potluck.Node.Compute;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Memory;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Requesting;
using Potluck.Scheduler.Topics;

namespace Potluck.Node.Tests.Compute;

/// <summary>
/// Compute nodes on real hosts (Noise, Yamux) over one SimulatedNetwork with virtual time, sharing an in-memory
/// topic hub; each node has its own data directory (ledger, modules, compiled cache), removed at the end. Keys and
/// node seeds come from one seeded Random. Ads republish on every change (no minimum gap), so a frozen clock never
/// leaves a provider looking busy.
/// </summary>
internal sealed class ComputeCluster : IAsyncDisposable
{
    public const long Grant = 1_000_000;

    private readonly Random _random;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "potluck-compute-tests", Guid.NewGuid().ToString("N"));

    public ComputeCluster(int seed)
    {
        Seed = seed;
        _random = new Random(seed);
        Time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        Network = new SimulatedNetwork(Time);
    }

    public int Seed { get; }

    public FakeTimeProvider Time { get; }

    public SimulatedNetwork Network { get; }

    public InMemoryTopicHub Hub { get; } = new();

    public List<Member> Members { get; } = [];

    public sealed record Member(string Name, Libp2pHost Host, ComputeNode Node, string DataDir, ComputeNodeOptions Options)
    {
        public PeerId PeerId => Host.PeerId;

        public bool Killed { get; set; }
    }

    public static ProviderOptions ProviderOptions(long price, int cores = 1, TimeSpan minPublishGap = default) => new()
    {
        Cores = cores,
        MemoryBytes = 256L << 20,
        MaxMemoryPerLease = 128L << 20,
        PricePerMegaFuel = price,
        Advertising = new AdvertisementOptions { MinPublishGap = minPublishGap },
    };

    public async Task<Member> AddAsync(string name, bool provide, long price = 10, Func<ITaskExecutor, ITaskExecutor>? decorate = null,
        Action<ComputeClientOptionsBuilder>? client = null, TimeSpan? minPublishGap = null)
    {
        var host = Libp2pHost.Create(PrivateKey.FromRandom(_random), [Network.CreateTransport()], new Libp2pHostSettings(), NodeRuntime.WithTime(Time, _random.NextInt64()), NullLoggerFactory.Instance);
        await host.StartAsync([Multiaddr.Parse("/memory/0")], CancellationToken.None);
        var dir = Path.Combine(_root, name);
        var builder = new ComputeClientOptionsBuilder();
        client?.Invoke(builder);
        var options = new ComputeNodeOptions
        {
            DataDir = dir,
            Provide = provide,
            Provider = ProviderOptions(price, minPublishGap: minPublishGap ?? TimeSpan.Zero),
            Client = builder.Build(),
            Credits = new CreditsOptions { InitialGrant = Grant },
            Sandbox = new Potluck.Scheduler.Sandbox.SandboxOptions { MaxMemoryBytes = 128L << 20 },
            Seed = _random.Next(),
            ExecutorDecorator = decorate,
        };
        var node = ComputeNode.Start(host, Hub.Join(host.PeerId), options, NullLoggerFactory.Instance, Time);
        var member = new Member(name, host, node, dir, options);
        Members.Add(member);
        return member;
    }

    /// <summary>Stops a member's compute services and starts them again on the same host and data directory.</summary>
    public async Task<Member> RestartComputeAsync(Member member)
    {
        await member.Node.DisposeAsync();
        var restarted = member with { Node = ComputeNode.Start(member.Host, Hub.Join(member.Host.PeerId), member.Options, NullLoggerFactory.Instance, Time) };
        Members[Members.IndexOf(member)] = restarted;
        return restarted;
    }

    /// <summary>Kills a node abruptly: its host goes first (no goodbye reaches anyone), then its services.</summary>
    public async Task KillAsync(Member member)
    {
        member.Killed = true;
        await member.Host.DisposeAsync();
        await member.Node.DisposeAsync();
    }

    /// <summary>Balances of every ledger, killed nodes' read back from disk.</summary>
    public long Balance(Member member)
    {
        if (!member.Killed)
        {
            return member.Node.Ledger.Balance();
        }
        using var ledger = CreditLedger.Open(member.DataDir, member.PeerId, new CreditsOptions { InitialGrant = Grant }, Time);
        return ledger.Balance();
    }

    /// <summary>
    /// Credits are conserved: every node's balance is its grant plus what it earned minus what it spent, all receipts
    /// counted once, so the balances sum to the grants; and what each requester spent on a provider is what that
    /// provider earned from it.
    /// </summary>
    public async Task AssertLedgersConserveAsync()
    {
        foreach (var m in Members.Where(m => !m.Killed))
        {
            await m.Node.Client.WhenReceiptsDeliveredAsync(CancellationToken.None);
        }
        Assert.That(Members.Sum(Balance), Is.EqualTo(Grant * Members.Count), $"seed {Seed}: balances sum to the grants");
        foreach (var payer in Members.Where(m => !m.Killed))
        {
            var spent = payer.Node.Ledger.Recent(1000).Where(e => e.Kind == LedgerEntryKind.Spent).ToList();
            foreach (var payee in Members.Where(m => !m.Killed && m != payer))
            {
                var paid = spent.Where(e => e.Counterparty == payee.PeerId).Sum(e => e.Amount);
                var earned = payee.Node.Ledger.Recent(1000)
                    .Where(e => e.Kind == LedgerEntryKind.Earned && e.Counterparty == payer.PeerId).Sum(e => e.Amount);
                Assert.That(earned, Is.EqualTo(paid), $"seed {Seed}: {payee.Name} earned from {payer.Name} what it paid");
            }
            Assert.That(payer.Node.Ledger.Reservations(PaymentState.Settled), Is.Empty, $"seed {Seed}: every receipt of {payer.Name} delivered");
            Assert.That(payer.Node.Ledger.Reservations(PaymentState.Reserved), Is.Empty, $"seed {Seed}: no reservation of {payer.Name} left open");
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var m in Members.Where(m => !m.Killed))
        {
            await m.Host.DisposeAsync();
            await m.Node.DisposeAsync();
        }
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    public static string HashChain(byte[] seed, int n)
    {
        var h = SHA256.HashData(seed);
        for (var i = 1; i < n; i++) h = SHA256.HashData(h);
        return Convert.ToHexStringLower(h) + "\n";
    }

    /// <summary>samples/{folder}/{name}.wasm under the repository root (the folder holding Node.sln).</summary>
    public static byte[] Sample(string name, string? folder = null)
        => File.ReadAllBytes(Potluck.Tests.RepositoryRoot.Combine("samples", folder ?? name, name + ".wasm"));
}

/// <summary>Options for a test client (init-only options built from mutable settings).</summary>
internal sealed class ComputeClientOptionsBuilder
{
    public Potluck.Scheduler.Verification.VerificationOptions Verification { get; set; } = new();

    public int MaxAttempts { get; set; } = 5;

    public int MaxLeaseChannels { get; set; } = 256;

    public ComputeClientOptions Build() => new()
    {
        MaxLeaseChannels = MaxLeaseChannels,
        Verification = Verification,
        MaxAttempts = MaxAttempts,
        Advertising = new AdvertisementOptions { MinPublishGap = TimeSpan.Zero },
    };
}
