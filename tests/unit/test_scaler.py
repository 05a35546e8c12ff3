from shardwise.zero.scaler import DynamicLossScaler


def test_backs_off_on_inf_and_grows_after_interval():
    scaler = DynamicLossScaler(scale=1024.0, growth_interval=3)
    scaler.update(found_inf=True)
    assert scaler.scale == 512.0 and scaler.skipped_steps == 1
    for _ in range(2):
        scaler.update(found_inf=False)
    assert scaler.scale == 512.0
    scaler.update(found_inf=False)
    assert scaler.scale == 1024.0 and scaler.good_steps == 0
