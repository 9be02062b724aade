using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Metrics;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Requesting;
using Potluck.Scheduler.Sandbox;
using Potluck.Scheduler.Storage;
using Potluck.Scheduler.Topics;
using Potluck.Scheduler.Verification;

namespace Potluck.Node.Compute;

/// <summary>
/// Compute on a running host: the credit ledger in the data directory, the WASM sandbox and module store, the
/// reputation store (kept in <c>reputation.db</c>) and fraud-proof service, the <see cref="ComputeClient"/> for submitting
/// tasks and (when providing) the <see cref="ProviderService"/> serving leases and publishing ads. Built and stopped by
/// the node's compute hosted service; chooses nothing about transports, time or randomness itself.
/// </summary>
public sealed class ComputeNode : IAsyncDisposable
{
    private readonly ReputationJournal _journal;
    private readonly bool _ownsSandbox;
    private int _disposed;

    private ComputeNode(CreditLedger ledger, WasmSandbox sandbox, ModuleStore modules, SandboxTaskExecutor executor, ReputationStore reputation,
        ReputationJournal journal, FraudService fraud, ComputeClient client, ProviderService? provider, bool ownsSandbox, TrustChainService? chain)
    {
        _journal = journal;
        _ownsSandbox = ownsSandbox;
        Chain = chain;
        Ledger = ledger;
        Sandbox = sandbox;
        Modules = modules;
        Executor = executor;
        Reputation = reputation;
        Fraud = fraud;
        Client = client;
        Provider = provider;
    }

    public CreditLedger Ledger { get; }

    public WasmSandbox Sandbox { get; }

    public ModuleStore Modules { get; }

    /// <summary>What is kept on disk for others (modules and compiled modules) and its limit, <c>compute:provider:diskBytes</c>.</summary>
    public DiskQuota Disk => Modules.Quota;

    public SandboxTaskExecutor Executor { get; }

    public ReputationStore Reputation { get; }

    public FraudService Fraud { get; }

    public ComputeClient Client { get; }

    /// <summary>Null when the node does not provide.</summary>
    public ProviderService? Provider { get; }

    /// <summary>The bilateral accounting chain and fork proofs; null when <c>compute:accounting:enabled</c> is off.</summary>
    public TrustChainService? Chain { get; }

    /// <summary>Submits a task (see <see cref="ComputeClient.SubmitAsync"/>).</summary>
    public Task<SubmissionResult> SubmitAsync(TaskSubmission submission, CancellationToken ct) => Client.SubmitAsync(submission, ct);

    /// <summary>What the compute layer is built from.</summary>
    internal sealed record Parts(
        IHost Host,
        PrivateKey Key,
        ITopicBus Bus,
        string DataDir,
        Hosting.ComputeOptions Options,
        NodeRuntime Runtime,
        TimeProvider SandboxTime,
        Func<ITaskExecutor, ITaskExecutor>? ExecutorDecorator,
        ILoggerFactory Loggers,
        ComputeInstruments Instruments)
    {
        /// <summary>A sandbox shared with other simulated nodes (a stand-in; not disposed with this node), or null for its own.</summary>
        public WasmSandbox? SharedSandbox { get; init; }

        /// <summary>The in-memory storage stand-in for the ledger and reputation databases.</summary>
        public bool InMemoryStorage { get; init; }

        /// <summary>The identity key was in the data directory before this start: a new ledger then means a lost one (chain recovery).</summary>
        public bool IdentityKept { get; init; }
    }

    /// <summary>The options of the sandbox a node with <paramref name="options"/> and data in <paramref name="dataDir"/> creates.</summary>
    public static SandboxOptions SandboxOptionsFor(Hosting.ComputeOptions options, string dataDir)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.Sandbox with
        {
            CacheDirectory = options.Sandbox.CacheDirectory ?? Path.Combine(dataDir, "cache"),
            MaxStdoutBytes = ComputeRuntime.MaxOutputBytes,
            // A pooled sandbox has a slot for every lease the provider may run at once, and a few for this node's own checks.
            InstanceSlots = options.Sandbox.InstanceSlots == 0 ? 0
                : Math.Min(SandboxOptions.MaxInstanceSlots, Math.Max(options.Sandbox.InstanceSlots, options.Provider.Cores + 4)),
        };
    }

    /// <summary>Opens the ledger, creates the sandbox and services, and starts them.</summary>
    /// <exception cref="LedgerException">The ledger cannot be opened (corrupt, or another identity's).</exception>
    internal static ComputeNode Start(Parts parts)
    {
        var (host, key, bus, dataDir, options, runtime, sandboxTime, decorate, loggers, instruments) = parts;
        var ledger = CreditLedger.Open(dataDir, key.PeerId, options.Credits, runtime.Time, parts.InMemoryStorage);
        WasmSandbox? sandbox = null;
        ReputationDatabase? reputationDb = null;
        ReputationJournal? journal = null;
        try
        {
            // One disk limit for what is kept for others: the module store and the sandbox's compiled cache, counted from
            // what is on disk now (a restart recomputes it), then brought within the limit, least recently used first.
            var disk = new DiskQuota(options.Provider.DiskBytes, instruments);
            sandbox = parts.SharedSandbox ?? new WasmSandbox(SandboxOptionsFor(options, dataDir), loggers.CreateLogger<WasmSandbox>(), sandboxTime, disk);
            // The in-memory storage stand-in keeps modules in memory too (they are fetched again after a crash).
            var modules = new ModuleStore(parts.InMemoryStorage ? null : Path.Combine(dataDir, "modules"), disk);
            disk.EvictToLimit();
            var executor = new SandboxTaskExecutor(sandbox, modules, runtime, instruments);
            var reputation = new ReputationStore();
            reputationDb = ReputationDatabase.Open(dataDir, parts.InMemoryStorage);
            journal = new ReputationJournal(reputation, reputationDb, runtime.Time, loggers.CreateLogger<ReputationJournal>());
            journal.Start();
            var fraud = new FraudService(bus, new FraudChecker(executor, options.Fraud), reputation, options.Fraud, loggers.CreateLogger<FraudService>(), instruments, runtime.Time);
            var client = new ComputeClient(host, key, bus, ledger, reputation, fraud, executor, options.Client, runtime,
                loggers.CreateLogger<ComputeClient>(), instruments);
            ProviderService? provider = null;
            if (options.Provide)
            {
                ITaskExecutor providerExecutor = decorate?.Invoke(executor) ?? executor;
                provider = new ProviderService(host, key, bus, providerExecutor, modules, ledger, options.Provider, runtime,
                    loggers.CreateLogger<ProviderService>(), instruments);
            }
            fraud.IsRelevant = client.Knows;
            // Providers this node has leased from are checked first; a refuted proof lowers its author's peer score.
            fraud.Priority = p => reputation.Get(p) is { Verified: > 0 } or { Unchecked: > 0 } or { Failures: > 0 } ? 0 : 1;
            fraud.Penalise = p => host.Budgets.Penalise(p, Misbehaviour.RefusedProof);
            fraud.Upheld = check => Forfeiture.Apply(ledger, instruments, check.Provider, check.Attestation!.Attestation.LeaseId);
            // Accused by a requester whose own reveal does not check: that requester broke its audit commitment here.
            fraud.RevealBroken = (check, proof) =>
            {
                if (check.Provider == key.PeerId && PeerId.TryFromBytes(check.Terms!.Requester, out var requester))
                {
                    ledger.RecordViolation(requester, check.Attestation!.Attestation.LeaseId, (int)check.Audit, proof.EncodeEvidence());
                }
            };
            TrustChainService? chain = null;
            if (options.Accounting.Enabled)
            {
                chain = new TrustChainService(host, key, bus, ledger, reputation, options.Accounting with { Credits = options.Credits }, runtime,
                    loggers.CreateLogger<TrustChainService>(), instruments);
                client.ReceiptDelivered += chain.OnReceiptDelivered;
                // A node that does not provide remembers only the gossiped blocks that may come to it again.
                chain.RemembersEveryGossipedBlock = provider is not null;
                if (provider is not null)
                {
                    provider.RefuseRequester = chain.IsForker;
                    provider.HasVerifiedStanding = chain.HasVerifiedStanding;
                    provider.VerifiedCredit = chain.VerifiedCredit;
                }
            }
            fraud.Start();
            chain?.Start();
            if (chain is not null && (ledger.ChainRecoveryPending || (ledger.Created && options.Accounting.Recovery.Mode switch
                {
                    ChainRecoveryMode.Always => true,
                    ChainRecoveryMode.WhenIdentityKept => parts.IdentityKept,
                    _ => false,
                })))
            {
                chain.BeginRecovery();
            }
            client.Start();
            provider?.Start();
            return new ComputeNode(ledger, sandbox, modules, executor, reputation, journal, fraud, client, provider, parts.SharedSandbox is null, chain);
        }
        catch
        {
            reputationDb?.Dispose();
            if (parts.SharedSandbox is null)
            {
                sandbox?.Dispose();
            }
            ledger.Dispose();
            throw;
        }
    }

    /// <summary>Stops providing (cancelling live leases), stops the client, and closes the sandbox and ledger.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        if (Provider is not null)
        {
            await Provider.DisposeAsync();
        }
        await Client.DisposeAsync();
        if (Chain is not null)
        {
            await Chain.DisposeAsync();
        }
        Fraud.Dispose();
        await _journal.DisposeAsync();
        await Executor.CloseAsync();
        if (_ownsSandbox)
        {
            Sandbox.Dispose();
        }
        Ledger.Dispose();
    }

    /// <summary>What SQLite holds for this node's ledger and reputation connections now.</summary>
    internal Scheduler.Storage.SqliteFootprint StorageFootprint() => Ledger.Footprint() + _journal.Database.Footprint();
}
