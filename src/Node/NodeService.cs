using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Potluck.Node.Control;
using Potluck.Protocol.Host;

namespace Potluck.Node;

/// <summary>What `potluck run` hands the hosted service: the node's options (data dir included) and where to print.</summary>
public sealed record NodeServiceSettings(NodeOptions Node, string DataDir, TextWriter Stdout);

/// <summary>
/// Runs a <see cref="PotluckNode"/> for the lifetime of the generic host (`potluck run`), with the control socket in
/// its data directory. Prints the peer id, listen addresses and each new peer connection on stdout.
/// </summary>
public sealed class NodeService : IHostedService
{
    private readonly NodeServiceSettings _settings;
    private readonly ILoggerFactory _loggers;
    private readonly TextWriter _stdout;
    private PotluckNode? _node;
    private ControlServer? _control;
    private readonly HashSet<long> _printed = [];

    public NodeService(NodeServiceSettings settings, ILoggerFactory loggers)
    {
        _settings = settings;
        _loggers = loggers;
        _stdout = TextWriter.Synchronized(settings.Stdout);
    }

    public PotluckNode? Node => _node;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // The control socket first: if another node already serves this data directory, stop before touching the network.
        var control = new ControlServer(_settings.DataDir, new ControlOptions(), TimeProvider.System, _loggers);
        await control.StartAsync(cancellationToken);
        _control = control;
        try
        {
            _node = await PotluckNode.StartAsync(_settings.Node, _loggers, cancellationToken);
        }
        catch
        {
            await control.DisposeAsync();
            _control = null;
            throw;
        }
        NodeControl.Register(control, _node);
        var stdout = _stdout;
        await stdout.WriteLineAsync($"Peer id: {_node.PeerId}");
        if (_settings.Node.SwarmKey is { } key)
        {
            await stdout.WriteLineAsync($"Private network: {key.Fingerprint}");
        }
        foreach (var address in _node.FullAddresses)
        {
            await stdout.WriteLineAsync($"Listening on {address}");
        }
        await stdout.WriteLineAsync($"Discovery: mDNS {(_node.Mdns is not null ? "on" : "off")}, {_settings.Node.Bootstrap.Count} bootstrap peers");
        await stdout.WriteLineAsync($"Control socket: {control.SocketPath}");
        if (_node.Compute?.Provider is not null && _settings.Node.Compute?.Provider is { } offer)
        {
            await stdout.WriteLineAsync($"Providing: {offer.Cores} core{(offer.Cores == 1 ? "" : "s")} at {offer.PricePerMegaFuel} credits per million fuel (--no-provide to stop)");
        }
        else if (_node.Compute is not null)
        {
            await stdout.WriteLineAsync("Providing: off");
        }
        await stdout.WriteLineAsync("Press Ctrl+C to stop.");
        await stdout.FlushAsync(cancellationToken);

        // Bootstrap dials and mDNS started inside PotluckNode.StartAsync, so connections may already be open: after the
        // header, subscribe, then replay those (OnConnected prints each connection once, whichever path reports it first).
        _node.Host.Connected += OnConnected;
        _node.Host.Disconnected += OnDisconnected;
        foreach (var connection in _node.Host.Connections)
        {
            OnConnected(connection);
        }
    }

    private void OnConnected(IConnection connection)
    {
        lock (_printed)
        {
            if (!_printed.Add(connection.Id))
            {
                return;
            }
        }
        _stdout.WriteLine($"Connected to {connection.RemotePeer} ({(connection.Direction == Direction.Inbound ? "inbound" : "outbound")} {connection.RemoteAddress})");
        _stdout.Flush();
    }

    private void OnDisconnected(IConnection connection)
    {
        lock (_printed)
        {
            _printed.Remove(connection.Id);
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_control is not null)
        {
            await _control.DisposeAsync();
        }
        if (_node is not null)
        {
            _node.Host.Connected -= OnConnected;
            _node.Host.Disconnected -= OnDisconnected;
            await _node.DisposeAsync();
        }
    }
}
