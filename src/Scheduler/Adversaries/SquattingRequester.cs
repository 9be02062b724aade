using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Scheduler.Adversaries;

/// <summary>
/// An adversarial requester (simulations and attack tests): takes a lease (request, signed accept) and then never
/// sends the module or input, only heartbeats, so that the provider's core stays reserved for nothing.
/// </summary>
public sealed class SquattingRequester : IAsyncDisposable
{
    private readonly PrivateKey _key;
    private readonly NodeRuntime _runtime;
    private readonly LeaseOptions _options;
    private readonly BackgroundWork _work;
    private readonly LeaseChannel _channel;
    private readonly CancellationTokenSource _stop = new();

    public SquattingRequester(IHost host, PrivateKey key, NodeRuntime runtime, PeerId provider, ILogger log, LeaseOptions? options = null)
    {
        _key = key;
        _runtime = runtime;
        _options = options ?? new LeaseOptions();
        _work = runtime.CreateBackgroundWork("squatter", log);
        _channel = new LeaseChannel(host, provider, _options, runtime.Time, _work);
    }

    /// <summary>The provider's last word on the squatted lease (a cancel when it ended it), once there is one.</summary>
    public TaskCompletionSource<LeaseMessage> Ended { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Requests and accepts a lease for <paramref name="work"/>, withholds its content, and heartbeats until stopped.</summary>
    public async Task<bool> SquatAsync(PublicKey provider, LeaseWork work, TimeSpan heartbeat)
    {
        ulong id;
        do
        {
            id = _runtime.SecureRandom.NextUInt64();
        }
        while (id == 0);
        var lease = new RequesterLease(_key, provider, id, work, _options);
        var offered = new TaskCompletionSource<LeaseOffer?>(TaskCreationOptions.RunContinuationsAsynchronously);
        _channel.Attach(id, message =>
        {
            switch (message)
            {
                case LeaseOffer offer:
                    offered.TrySetResult(offer);
                    break;
                case LeaseReject:
                    offered.TrySetResult(null);
                    break;
                case LeaseCancel or LeaseResult:
                    Ended.TrySetResult(message);
                    break;
            }
            return Task.CompletedTask;
        });
        await _channel.SendAsync(lease.Start(_runtime.Time.GetUtcNow()).Send);
        if (await offered.Task is not { } offer)
        {
            return false;
        }
        var accepted = lease.Handle(offer, _runtime.Time.GetUtcNow());
        await _channel.SendAsync([.. accepted.Send.OfType<LeaseAccept>()]);
        _work.Run("squat", async ct =>
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, _stop.Token);
            ulong sequence = 0;
            while (!linked.IsCancellationRequested && !Ended.Task.IsCompleted)
            {
                await Task.Delay(heartbeat, _runtime.Time, linked.Token);
                await _channel.SendAsync([new LeaseHeartbeat { RequestId = id, Sequence = ++sequence }]);
            }
        });
        return true;
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        await _channel.DisposeAsync();
        await _work.StopAsync();
    }
}
