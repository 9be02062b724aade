using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Pnet;

namespace Potluck.Node;

public sealed record NodeServiceSettings(PrivateKey Key, IReadOnlyList<Multiaddr> Listen, SwarmKey? SwarmKey, TextWriter Stdout);

/// <summary>Runs a <see cref="PotluckNode"/> for the lifetime of the generic host (`potluck run`).</summary>
public sealed class NodeService : IHostedService
{
    private readonly NodeServiceSettings _settings;
    private readonly ILoggerFactory _loggers;
    private PotluckNode? _node;

    public NodeService(NodeServiceSettings settings, ILoggerFactory loggers)
    {
        _settings = settings;
        _loggers = loggers;
    }

    public PotluckNode? Node => _node;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _node = await PotluckNode.StartTcpAsync(_settings.Key, _settings.Listen, _settings.SwarmKey, _loggers, cancellationToken);
        var stdout = _settings.Stdout;
        await stdout.WriteLineAsync($"Peer id: {_node.PeerId}");
        if (_settings.SwarmKey is { } key)
        {
            await stdout.WriteLineAsync($"Private network: {key.Fingerprint}");
        }
        foreach (var address in _node.FullAddresses)
        {
            await stdout.WriteLineAsync($"Listening on {address}");
        }
        await stdout.FlushAsync(cancellationToken);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_node is not null)
        {
            await _node.DisposeAsync();
        }
    }
}
