using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Potluck.Node.Compute;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Topics;

namespace Potluck.Node.Hosting;

/// <summary>
/// Starts the compute layer last (when <see cref="ComputeOptions.Enabled"/>), once the host listens and discovery runs,
/// and stops it first: live leases are cancelled and the ledger closed before any connection goes.
/// </summary>
internal sealed class ComputeHostedService(IServiceProvider provider, PotluckOptions options, NodeSetup setup) : IHostedService
{
    private IServiceProvider? _services = provider; // until started: nothing is resolved after, and a node may let its provider go

    /// <summary>The running compute layer; null when compute is off or not started.</summary>
    public ComputeNode? Node { get; private set; }

    /// <summary>The operator's preferences applied to the provider; null when compute is off or not started.</summary>
    public Home.PreferencesService? Preferences { get; private set; }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var services = _services ?? throw new InvalidOperationException("compute was already started");
        _services = null;
        if (!options.Compute.Enabled)
        {
            return Task.CompletedTask;
        }
        // Every request a peer makes of the compute protocols spends its budget before a handler sees it.
        var host = services.GetRequiredService<Potluck.Protocol.Host.IHost>();
        host.BudgetInboundStreams(Potluck.Scheduler.Leasing.LeaseProtocol.Id, Potluck.Protocol.Host.PeerBudgets.LeaseRequests);
        host.BudgetInboundStreams(Potluck.Scheduler.Leasing.LeaseProtocol.IdWithReceipts, Potluck.Protocol.Host.PeerBudgets.LeaseRequests);
        host.BudgetInboundStreams(Potluck.Scheduler.Providing.ReceiptProtocol.Id, Potluck.Protocol.Host.PeerBudgets.Receipts);
        host.BudgetInboundStreams(Potluck.Scheduler.Advertising.AdvertisementProtocol.FetchProtocolId, Potluck.Protocol.Host.PeerBudgets.AdFetches);
        host.BudgetInboundStreams(Potluck.Scheduler.Advertising.AdvertisementProtocol.SampleProtocolId, Potluck.Protocol.Host.PeerBudgets.AdSamples);
        Node = ComputeNode.Start(new ComputeNode.Parts(
            host,
            services.GetRequiredService<PrivateKey>(),
            services.GetRequiredService<ITopicBus>(),
            options.DataDir!,
            options.Compute,
            setup.Runtime,
            setup.SandboxTime,
            setup.ExecutorDecorator,
            services.GetRequiredService<ILoggerFactory>(),
            services.GetRequiredService<Potluck.Scheduler.Metrics.ComputeInstruments>())
        {
            SharedSandbox = setup.StandIns.SharedSandbox,
            InMemoryStorage = setup.StandIns.InMemoryStorage,
            IdentityKept = setup.IdentityKept.Value,
        });
        Preferences = new Home.PreferencesService(
            services.GetRequiredService<Potluck.Protocol.Host.IHost>(),
            Node.Provider,
            services.GetRequiredService<Home.IMachineProbe>(),
            options.Preferences,
            setup.Runtime,
            services.GetRequiredService<TimeZoneInfo>(),
            services.GetRequiredService<ILogger<Home.PreferencesService>>());
        Preferences.Start();
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (Preferences is { } preferences)
        {
            await preferences.DisposeAsync();
        }
        if (Node is { } node)
        {
            await node.DisposeAsync();
        }
    }
}
