using System.IO.Pipelines;
using FsCheck;
using FsCheck.Fluent;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Muxing;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>Any bytes from the remote end in a clean close or a typed failure: no crash, no hang.</summary>
public class YamuxFuzzTests
{
    private static readonly TimeSpan HangGuard = TimeSpan.FromSeconds(30);

    [FsCheck.NUnit.Property(MaxTest = 100)]
    public bool RandomBytes_IntoALiveConnection_EndInACleanOrTypedClose(byte[] bytes) => Feed(bytes);

    [FsCheck.NUnit.Property(MaxTest = 200)]
    public Property PlausibleFrames_IntoALiveConnection_EndInACleanOrTypedClose() =>
        Prop.ForAll(Frames().ToArbitrary(), frames => Feed(frames));

    private static Gen<byte[]> Frames()
    {
        var header =
            from type in Gen.Frequency((4, Gen.Constant(0)), (3, Gen.Constant(1)), (1, Gen.Constant(2)), (1, Gen.Constant(3)), (1, Gen.Choose(4, 255)))
            from flags in Gen.Frequency((5, Gen.Choose(0, 15)), (1, Gen.Choose(0, 65535)))
            from id in Gen.Frequency((8, Gen.Choose(0, 8)), (1, Gen.Choose(0, int.MaxValue)))
            from length in Gen.Frequency(
                (6, Gen.Choose(0, 300)),
                (2, Gen.Choose(0, (int)YamuxOptions.InitialStreamWindow + 10)),
                (1, Gen.Constant(int.MaxValue)),
                (1, Gen.Constant(-1)))
            select (type, flags, id, length);
        return header.ListOf().Select(list =>
        {
            var output = new List<byte>();
            foreach (var (type, flags, id, length) in list)
            {
                var raw = new byte[YamuxHeader.Size];
                new YamuxHeader(YamuxFrameType.Data, (YamuxFlags)flags, (uint)id, (uint)length).Write(raw);
                raw[1] = (byte)type;
                output.AddRange(raw);
                if (type == 0)
                {
                    output.AddRange(new byte[Math.Min((uint)length, 300u)]);
                }
            }

            return output.ToArray();
        });
    }

    private static bool Feed(byte[] bytes) => FeedAsync(bytes).GetAwaiter().GetResult();

    private static async Task<bool> FeedAsync(byte[] bytes)
    {
        var (ours, theirs) = MemoryPipePairFactory.CreatePair();
        var muxer = new YamuxMuxer(new YamuxOptions(), NodeRuntime.WithTime(new VirtualClock()), NullLoggerFactory.Instance);
        var connection = muxer.Create(ours, initiator: false);
        var drain = DrainAsync(theirs.Input);
        var readers = AcceptAndReadAllAsync(connection);

        await theirs.Output.WriteAsync(bytes);
        await theirs.Output.CompleteAsync();

        var closed = connection.Completion.ContinueWith(t => t.Exception?.InnerException, TaskScheduler.Default);
        var error = await closed.WaitAsync(HangGuard);
        await connection.DisposeAsync().AsTask().WaitAsync(HangGuard);
        await readers.WaitAsync(HangGuard);
        await drain.WaitAsync(HangGuard);
        return error is null or ProtocolViolationException or IOException;
    }

    private static async Task DrainAsync(PipeReader input)
    {
        while (true)
        {
            var result = await input.ReadAsync();
            input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                await input.CompleteAsync();
                return;
            }
        }
    }

    private static async Task AcceptAndReadAllAsync(YamuxConnection connection)
    {
        var readers = new List<Task>();
        try
        {
            while (true)
            {
                var stream = await connection.AcceptStreamAsync(default);
                readers.Add(Task.Run(async () =>
                {
                    try
                    {
                        while (true)
                        {
                            var result = await stream.Input.ReadAsync();
                            stream.Input.AdvanceTo(result.Buffer.End);
                            if (result.IsCompleted)
                            {
                                return;
                            }
                        }
                    }
                    catch (IOException)
                    {
                        // Reset or connection closed: expected under fuzzing.
                    }
                }));
            }
        }
        catch (IOException)
        {
            // The connection closed.
        }

        await Task.WhenAll(readers);
    }
}
