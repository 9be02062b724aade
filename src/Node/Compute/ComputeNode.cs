using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Requesting;
using Potluck.Scheduler.Sandbox;
using Potluck.Scheduler.Topics;
using Potluck.Scheduler.Verification;

namespace Potluck.Node.Compute;

/// <summary>
/// Compute on a running host: the credit ledger in the data directory, the WASM sandbox and module store, the
/// reputation store (kept in <c>reputation.db</c>) and fraud-proof service, the <see cref="ComputeClient"/> for submitting tasks and (when
/// <see cref="ComputeNodeOptions.Provide"/>) the <see cref="ProviderService"/> serving leases and publishing ads.
/// Takes the host and a topic bus (<see cref="GossipTopicBus"/> over gossipsub, or an in-memory hub in tests);
/// chooses nothing about transports or time itself.
/// </summary>
public sealed class ComputeNode : IAsyncDisposable
{
    private readonly ReputationJournal _journal;

    private ComputeNode(CreditLedger ledger, WasmSandbox sandbox, ModuleStore modules, SandboxTaskExecutor executor, ReputationStore reputation,
        ReputationJournal journal, FraudService fraud, ComputeClient client, ProviderService? provider)
    {
        _journal = journal;
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

    public SandboxTaskExecutor Executor { get; }

    public ReputationStore Reputation { get; }

    public FraudService Fraud { get; }

    public ComputeClient Client { get; }

    /// <summary>Null when the node does not provide.</summary>
    public ProviderService? Provider { get; }

    /// <summary>Submits a task (see <see cref="ComputeClient.SubmitAsync"/>).</summary>
    public Task<SubmissionResult> SubmitAsync(TaskSubmission submission, CancellationToken ct) => Client.SubmitAsync(submission, ct);

    /// <summary>Opens the ledger, creates the sandbox and services, and starts them on <paramref name="host"/>.</summary>
    /// <exception cref="LedgerException">The ledger cannot be opened (corrupt, or another identity's).</exception>
    public static ComputeNode Start(Libp2pHost host, ITopicBus bus, ComputeNodeOptions options, ILoggerFactory loggers, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(bus);
        ArgumentNullException.ThrowIfNull(options);
        var sandboxOptions = options.Sandbox;
        sandboxOptions.CacheDirectory ??= Path.Combine(options.DataDir, "cache");
        sandboxOptions.MaxStdoutBytes = ComputeRuntime.MaxOutputBytes;
        var ledger = CreditLedger.Open(options.DataDir, host.PeerId, options.Credits, time);
        WasmSandbox? sandbox = null;
        ReputationDatabase? reputationDb = null;
        ReputationJournal? journal = null;
        try
        {
            sandbox = new WasmSandbox(sandboxOptions, loggers.CreateLogger<WasmSandbox>(), options.SandboxTime ?? TimeProvider.System);
            var modules = new ModuleStore(Path.Combine(options.DataDir, "modules"));
            var executor = new SandboxTaskExecutor(sandbox, modules);
            var reputation = new ReputationStore();
            reputationDb = ReputationDatabase.Open(options.DataDir);
            journal = new ReputationJournal(reputation, reputationDb, time, loggers.CreateLogger<ReputationJournal>());
            journal.Start();
            var fraud = new FraudService(bus, new FraudChecker(executor, options.Fraud), reputation, options.Fraud, loggers.CreateLogger<FraudService>());
            var random = new Random(options.Seed ?? Random.Shared.Next());
            var client = new ComputeClient(host, host.PrivateKey, bus, ledger, reputation, fraud, executor, options.Client, time,
                new Random(random.Next()), loggers.CreateLogger<ComputeClient>());
            ProviderService? provider = null;
            if (options.Provide)
            {
                var providerOptions = options.Provider;
                ITaskExecutor providerExecutor = options.ExecutorDecorator?.Invoke(executor) ?? executor;
                provider = new ProviderService(host, host.PrivateKey, bus, providerExecutor, modules, ledger, providerOptions, time,
                    loggers.CreateLogger<ProviderService>());
            }
            fraud.Start();
            client.Start();
            provider?.Start();
            return new ComputeNode(ledger, sandbox, modules, executor, reputation, journal, fraud, client, provider);
        }
        catch
        {
            if (journal is not null)
            {
                journal.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
            else
            {
                reputationDb?.Dispose();
            }
            sandbox?.Dispose();
            ledger.Dispose();
            throw;
        }
    }

    /// <summary>Stops providing (cancelling live leases), stops the client, and closes the sandbox and ledger.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Provider is not null)
        {
            await Provider.DisposeAsync();
        }
        await Client.DisposeAsync();
        Fraud.Dispose();
        await _journal.DisposeAsync();
        await Executor.CloseAsync();
        Sandbox.Dispose();
        Ledger.Dispose();
    }
}
